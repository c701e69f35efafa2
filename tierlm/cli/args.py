"""Engine flags generated from `EngineConfig` fields: one flag per field, grouped as the config is."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Iterable

from tierlm.cli.errors import CLIError
from tierlm.config import GROUPS, EngineConfig


def _base_type(tp) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _help(f: dataclasses.Field) -> str:
    """The field's help, plus its default unless the help already states one (or there is none to state)."""
    text = f.metadata["help"]
    if f.default is None or f.default == "" or "(default" in text:
        return text
    return f"{text} (default: {f.default})"


def _registry_choices(registry: str) -> tuple[str, ...]:
    """A flag's choices from the registry that serves it ('auto' first)."""
    if registry == "attention":
        from tierlm.attention.registry import all_backend_names

        return ("auto",) + all_backend_names()
    raise ValueError(f"unknown registry {registry!r}")


def add_engine_args(parser: argparse.ArgumentParser, groups: Iterable[str] = GROUPS,
                    model_required: bool = True) -> None:
    """Add one flag per `EngineConfig` field of the given groups, under a titled argument group each."""
    hints = typing.get_type_hints(EngineConfig)
    wanted = set(groups)
    arg_groups = {g: parser.add_argument_group(f"{g} options") for g in GROUPS if g in wanted}
    for f in dataclasses.fields(EngineConfig):
        group = f.metadata["group"]
        if group not in wanted:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        kwargs = {"dest": f.name, "help": _help(f)}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = f.default
        else:
            kwargs["type"] = tp
            kwargs["default"] = f.default
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            elif "registry" in f.metadata:
                kwargs["choices"] = _registry_choices(f.metadata["registry"])
            if f.name == "model":
                kwargs["required"] = model_required
        arg_groups[group].add_argument(flag, *f.metadata.get("aliases", ()), **kwargs)


def config_from_args(args: argparse.Namespace, **overrides) -> EngineConfig:
    """Build and validate an `EngineConfig` from parsed flags; a bad value raises CLIError naming its flag."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig) if hasattr(args, f.name)}
    values.update(overrides)
    config = EngineConfig(**values)
    try:
        config.validate()
    except ValueError as e:
        raise CLIError(str(e)) from None
    return config

