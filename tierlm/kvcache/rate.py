"""`Rate`: an online rate (amount per second) for the load-or-recompute cost model (`tierlm.kvcache.cost`)."""
from __future__ import annotations

from dataclasses import dataclass

EWMA_ALPHA = 0.2


@dataclass
class Rate:
    """An online rate (amount per second): exponentially weighted sums of amounts and of seconds, so one
    long transfer counts for more than one short one; `prior` until the first sample."""

    prior: float
    alpha: float = EWMA_ALPHA
    amount: float = 0.0
    seconds: float = 0.0
    samples: int = 0

    def observe(self, amount: float, seconds: float) -> None:
        if amount <= 0 or seconds <= 0:
            return
        a = 1.0 if self.samples == 0 else self.alpha
        self.amount += a * (amount - self.amount)
        self.seconds += a * (seconds - self.seconds)
        self.samples += 1

    @property
    def value(self) -> float:
        return self.amount / self.seconds if self.samples else self.prior

    def set(self, value: float) -> None:
        """Pin the rate to `value` (one sample of one second)."""
        self.amount, self.seconds, self.samples = float(value), 1.0, max(1, self.samples)
