"""The CLI's training options, built from :class:`~shmopt.config.Config` field metadata: every
flag, default and help text is written once, on the field."""
from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable

import click

from .config import RUN, TRAIN, Config


def _option(f) -> list[Callable]:
    meta, default = f.metadata, f.default
    if default is MISSING:
        default = f.default_factory()           # type: ignore[misc]
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    names = [flag] + ([meta["short"]] if meta.get("short") else [])
    kw: dict[str, Any] = {"help": meta["help"]}
    if f.name == "betas":                        # one tuple field, two flags
        return [click.option(n, type=float, default=d, show_default=True, help=f"{meta['help']} ({n[2:]})")
                for n, d in zip(flag.split("/"), default)]
    if isinstance(default, bool):
        if default:
            return [click.option(f"{flag}/--no-{flag[2:]}", f.name, default=True, show_default=True, **kw)]
        return [click.option(*names, f.name, is_flag=True, **kw)]
    if isinstance(default, tuple):
        return [click.option(*names, f.name, multiple=True, metavar=meta.get("metavar"), **kw)]
    if meta.get("type") is not None:
        kw["type"] = meta["type"]
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    return [click.option(*names, f.name, default=default, show_default=default is not None, **kw)]


def config_options(*scopes: str) -> Callable:
    """Decorator: one click option per Config field of the given scopes (TRAIN, RUN)."""
    chosen = scopes or (TRAIN,)
    opts = [o for f in fields(Config) if f.metadata.get("scope") in chosen for o in _option(f)]

    def decorate(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn
    return decorate


def config_from(kw: dict[str, Any]) -> Config:
    """The Config of parsed options (``kw`` loses every Config key it had)."""
    names = {f.name for f in fields(Config)}
    values = {k: kw.pop(k) for k in list(kw) if k in names}
    if "beta1" in kw:
        values["betas"] = (kw.pop("beta1"), kw.pop("beta2"))
    if "slow" in values:
        values["slow"] = tuple(values["slow"])
    return Config(**values)


__all__ = ["config_options", "config_from", "TRAIN", "RUN"]
