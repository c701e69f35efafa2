"""`SegmentIndex`: which page is where in a directory of segments (`segment.py`), in LRU order, within a
byte budget, kept in step with other engines that share the directory.

At start-up it is built from the segments' tables alone (oldest segment mtime first). A lookup that misses
re-lists the directory when another engine may have changed it since the last trusted listing, so
segments other engines wrote are adopted and those they removed are forgotten. This engine's own changes
(segments it writes or removes) are accounted for as they are made (`changing`): an engine writing
through to the store does not list the whole directory on every miss (a listing is GIL-holding work in
proportion to the segments, on a lookup thread beside the scheduler's). Removing a page punches its bytes
out of its segment (a hole is how a removal survives a restart); the segment itself goes once nothing in
it is indexed, or as a whole where the file system cannot punch holes.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tierlm.kvcache.stores.base import encoded_size
from tierlm.kvcache.stores.dir_ops import is_file, listdir, mtime_ns, unlink
from tierlm.kvcache.stores.segment import Entry, NotASegment, is_hole, punch, read_table

logger = logging.getLogger(__name__)
SUFFIX = ".kvs"
TMP = ".tmp-"
_SEGMENT_NAME = re.compile(r"[0-9a-f]{32}" + re.escape(SUFFIX))
_STALE_TMP_SECONDS = 3600.0  # younger temp files may be another engine's write in progress
_RACY_SECONDS = 1.0  # a listing is trusted only if the directory was already this quiet when it was made
# While this engine changes the directory, a miss lists it at most and at least this often (other changes show
# in the mtime and are listed at once): another engine's change in the same timestamp tick as one of this
# engine's, or as a listing, leaves no trace there.
_RELIST_SECONDS = 1.0
# An untrusted listing of an unchanged directory is made again on a miss at most this often: a listing costs
# the lookup thread, which holds the GIL for it, time per segment file, and lookups come with every arriving
# request (another engine's change made in a listing's own timestamp tick shows up this much later, a miss
# meanwhile).
_RELIST_UNSURE_SECONDS = 0.25
_STAMP_SECONDS = 1.0  # refresh a segment's last-used mtime at most this often


class Segment:
    """One segment file as indexed: its table, how many of its records are indexed (`live`), when this
    engine adopted it and when it last stamped its mtime."""

    __slots__ = ("name", "entries", "live", "adopted", "stamped")

    def __init__(self, name: str, entries: list[Entry], adopted: float) -> None:
        self.name, self.entries, self.live, self.adopted, self.stamped = name, entries, 0, adopted, 0.0


class SegmentIndex:
    """key -> (segment, record) for one directory, least recently used first; `mu` guards it. Never
    removes anything when `read_only`; `on_invalid` is called for each file that is not a valid segment."""

    def __init__(self, directory: Path, max_bytes: int, read_only: bool, on_invalid: Callable[[], None]) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.read_only = read_only
        self._on_invalid = on_invalid
        self.mu = threading.Lock()
        self._list_mu = threading.Lock()  # one directory listing at a time
        self.index: "OrderedDict[str, tuple[Segment, int]]" = OrderedDict()
        self.segs: dict[str, Segment] = {}
        self.bytes = 0
        self.evicted = 0
        # (`_own_mu`) the directory mtime_ns the index reflects, when it was last listed, whether that is
        # trusted (a quiet listing, `_RACY_SECONDS`) and when this engine last changed the directory itself
        self._own_mu, self._change_mu = threading.Lock(), threading.Lock()
        self._known, self._listed_at, self._sure, self._changed_at = -1, 0.0, False, float("-inf")
        self._invalid: set[str] = set()  # files named like segments that are not (left alone when read-only)
        self._punch = True  # until the file system says it cannot

    def scan(self) -> None:
        """Build the index at start-up; remove stale temp files."""
        now = time.time()
        if not self.read_only:
            for e in listdir(self.dir):
                try:
                    if e.name.startswith(TMP) and now - e.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS:
                        unlink(e.path)
                except OSError:
                    continue
        self.refresh(force=True)
        with self.mu:
            self.evict_over_budget()

    def refresh(self, force: bool = False) -> None:
        """Adopt segments other engines wrote and forget those they removed, if another engine may have
        changed the directory since it was last listed (always with `force`)."""
        with self._list_mu:
            mtime = mtime_ns(self.dir)
            if mtime is None:
                return
            with self._own_mu:
                now = time.time()
                trusted_for = _RELIST_SECONDS if now - self._changed_at < _RELIST_SECONDS else _RELIST_UNSURE_SECONDS
                if not force and mtime == self._known and (self._sure or now - self._listed_at < trusted_for):
                    return
            listed_at = time.time()
            names = {e.name for e in listdir(self.dir)
                     if _SEGMENT_NAME.fullmatch(e.name) and is_file(e)} - self._invalid
            with self._own_mu:
                self._known, self._listed_at = mtime, listed_at
                self._sure = listed_at - mtime / 1e9 > _RACY_SECONDS
            with self.mu:
                gone = [s for n, s in self.segs.items() if n not in names and s.adopted < listed_at]
                for seg in gone:
                    self.forget(seg)
                new = names - self.segs.keys()
            loaded = [s for s in (self._load(n) for n in new) if s is not None]
            loaded.sort(key=lambda s: s[1])
            with self.mu:
                for seg, _, alive in loaded:
                    self.adopt(seg, alive)

    def changing(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, a change of the directory by this engine (a file created, renamed or removed): when
        the index reflected the directory just before it, it reflects it after it too, and a miss need
        not list the directory for it."""
        with self._change_mu:  # this engine's threads change the directory one at a time (a syscall each)
            before = mtime_ns(self.dir)
            try:
                return fn(*args)
            finally:
                after = mtime_ns(self.dir)  # may take in another engine's change made meanwhile (_RELIST_SECONDS)
                with self._own_mu:
                    self._changed_at = time.time()
                    if before is not None and after is not None and before == self._known:
                        self._known, self._sure = after, False

    def _load(self, name: str) -> Optional[tuple[Segment, float, list[int]]]:
        """A segment's table, its mtime and the records not punched out; None if it vanished or is not a
        valid segment (which is removed)."""
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # removed by another engine meanwhile, a link, no permission
            return None
        try:
            entries = read_table(fd)
            alive = [i for i, e in enumerate(entries) if not is_hole(fd, e.offset)]
            mtime = os.fstat(fd).st_mtime
        except NotASegment as e:
            self._on_invalid()
            logger.warning("File KV store %s: %s is not a valid segment (%s); ignoring%s", self.dir, name, e,
                           "" if self.read_only else " and removing it")
            if self.read_only:
                self._invalid.add(name)
            else:
                unlink(path)
            return None
        except OSError:
            return None
        finally:
            os.close(fd)
        return Segment(name, entries, time.time()), mtime, alive

    # ---- index (callers hold self.mu) ------------------------------------------------------------------------
    def adopt(self, seg: Segment, alive: Sequence[int]) -> None:
        """Index a segment's live records as most recently used. A key stored twice keeps the copy in the
        segment whose name sorts first (every engine sharing the directory agrees); the other is removed."""
        if seg.name in self.segs:  # a listing found this engine's own write before the write adopted it
            return
        self.segs[seg.name] = seg
        losers = []
        for i in alive:
            key = seg.entries[i].key
            held = self.index.get(key)
            if held is not None and held[0].name < seg.name:
                losers.append((seg, i))
                continue
            if held is not None:
                losers.append(self.unindex(key))
            self.index[key] = (seg, i)
            seg.live += 1
            self.bytes += encoded_size(seg.entries[i].length)
        for s, i in losers:
            self.discard(s, i)
        if not seg.live:
            self.discard(seg, None)

    def unindex(self, key: str) -> tuple[Segment, int]:
        seg, i = self.index.pop(key)
        seg.live -= 1
        self.bytes -= encoded_size(seg.entries[i].length)
        return seg, i

    def forget(self, seg: Segment) -> None:
        """Unindex every page of a segment (gone from the directory, or removed as a whole)."""
        for e in seg.entries:
            if self.index.get(e.key, (None,))[0] is seg:
                self.unindex(e.key)
        self.segs.pop(seg.name, None)

    def discard(self, seg: Segment, i: Optional[int]) -> None:
        """Remove the bytes of unindexed record `i` from disk: the whole segment once nothing in it is
        indexed (or where the file system cannot punch holes, taking its other pages along)."""
        if self.read_only:
            return
        path = self.dir / seg.name
        if seg.live and i is not None and self._punch:
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError:  # removed by another engine meanwhile
                return
            try:
                if punch(fd, seg.entries[i].offset, seg.entries[i].length):
                    return
                self._punch = False
                logger.info("File KV store %s: the file system cannot punch holes; removing whole segments",
                            self.dir)
            except OSError as e:
                logger.debug("File KV store: cannot punch a page out of %s (%s)", path, e)
                return
            finally:
                os.close(fd)
        if seg.live and i is None:
            return
        self.forget(seg)
        self.changing(unlink, path)

    def evict_over_budget(self) -> None:
        if self.read_only:  # nothing can be removed; the budget is the owner's business
            return
        while self.bytes > self.max_bytes and self.index:
            seg, i = self.unindex(next(iter(self.index)))
            self.evicted += 1
            self.discard(seg, i)

    def find(self, keys: Sequence[str], refresh: bool) -> list[Optional[tuple[Segment, int]]]:
        with self.mu:
            found = [self.index.get(k) for k in keys]
        if refresh and not all(found):
            self.refresh()
            with self.mu:
                found = [self.index.get(k) for k in keys]
        return found

    def locate(self, key: str) -> Optional[tuple[Path, int, int]]:
        """(segment file, offset, length) of a stored page's bytes, for tools and tests."""
        held = self.find([key], refresh=True)[0]
        return None if held is None else (self.dir / held[0].name, held[0].entries[held[1]].offset,
                                           held[0].entries[held[1]].length)

    def touch(self, hits: Sequence[tuple[str, tuple[Segment, int]]]) -> None:
        """Make read pages most recently used; stamp their segments' mtime (best effort: reading never needs
        write access)."""
        now = time.time()
        stamp = []
        with self.mu:
            for key, held in hits:
                if self.index.get(key) == held:
                    self.index.move_to_end(key)
                    if now - held[0].stamped > _STAMP_SECONDS:
                        held[0].stamped = now
                        stamp.append(held[0].name)
        for name in stamp:
            try:
                os.utime(self.dir / name)
            except OSError:  # not ours to stamp (read-only store, another user's file): LRU order suffers only
                pass

    def remove(self, keys: Sequence[str], keep_bytes: bool = False) -> None:
        """Unindex `keys`; also remove their bytes unless `keep_bytes` (pages another engine removed)."""
        with self.mu:
            for key in keys:
                if key in self.index:
                    held = self.unindex(key)
                    if not keep_bytes:
                        self.discard(*held)

    def clear(self) -> None:
        with self.mu:
            for seg in list(self.segs.values()):
                self.forget(seg)
                if not self.read_only:
                    self.changing(unlink, self.dir / seg.name)

    def stats(self) -> dict:
        with self.mu:
            return {"pages": len(self.index), "segments": len(self.segs), "bytes": self.bytes,
                    "max_bytes": self.max_bytes, "evicted_pages": self.evicted}
