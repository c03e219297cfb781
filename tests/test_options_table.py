"""The queue options are declared once, in ``ringq.config.QUEUE_OPTIONS``.

What is derived from the table at import (``KEYWORD_DEFAULTS``, the
environment variables, the checks of ``QueueOptions``) needs no test of its
own here. What has to be spelled out elsewhere is compared with it: the
signature of ``ringq.Queue`` and the fields of ``QueueOptions`` (type
checkers read those), ``ringq._core.Engine`` (its stub, its PyO3 signature,
the engine's defaults and ranges), the table in ``ringq.config``'s docstring
and the README's options table.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any

import pytest
import ringq
from ringq import _core, config
from ringq.backend import Backend
from ringq.config import QUEUE_OPTIONS, QueueOption, QueueOptions, render_options_table
from ringq.core import KEYWORD_DEFAULTS
from ringq.retry import MAX_SECONDS, _Problems

ROOT = Path(__file__).resolve().parent.parent
NAMES = [o.name for o in QUEUE_OPTIONS]
#: The Python type of each kind: in the SDK's signatures, and in the stub's.
SDK_TYPES = {"int": "int", "seconds": "float", "choice": "Durability", "bool": "bool"}
STUB_TYPES = {"int": "int", "seconds": "float", "choice": "str", "bool": "bool"}


def effective_default(o: QueueOption) -> object:
    """What the option is when not given: the table's default, or the engine's."""
    if o.default is None:
        assert o.engine_default is not None, o.name
        return o.engine_default
    assert o.engine_default is None, f"{o.name}: engine_default is only for a None default"
    return o.default


def sdk_annotation(o: QueueOption) -> str:
    return SDK_TYPES[o.kind] + (" | None" if o.optional else "")


# -- the SDK's signatures ----------------------------------------------------------------------


def test_queue_signature_is_the_table() -> None:
    params = inspect.signature(ringq.Queue.__init__).parameters.values()
    options = [
        (p.name, p.default, p.annotation)
        for p in params
        # namespace= says where in a redis:// target the queue lives, and
        # codec= is an object (not from the environment): not options
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.name not in ("options", "resolver", "namespace", "codec")
    ]
    assert options == [(o.name, o.default, sdk_annotation(o)) for o in QUEUE_OPTIONS]


def test_queue_options_fields_are_the_table() -> None:
    *options, handlers = dataclasses.fields(QueueOptions)
    assert [(f.name, f.default, f.type) for f in options] == [
        (o.name, o.default, sdk_annotation(o)) for o in QUEUE_OPTIONS
    ]
    assert handlers.name == "handlers"
    assert dict(KEYWORD_DEFAULTS) == {o.name: o.default for o in QUEUE_OPTIONS}


@pytest.mark.parametrize("option", QUEUE_OPTIONS, ids=NAMES)
def test_every_option_has_an_environment_variable(option: QueueOption) -> None:
    value = True if option.kind == "bool" else effective_default(option)
    text = str(value).lower() if option.kind == "bool" else str(value)
    from_env = QueueOptions.from_env(environ={f"RINGQ_{option.name.upper()}": text})
    assert from_env == QueueOptions.from_mapping({option.name: value})
    assert getattr(from_env, option.name) == value


# -- the engine ---------------------------------------------------------------------------------


def stub_engine_options() -> dict[str, tuple[str, object]]:
    """``Engine.__new__``'s keyword-only parameters in ``_core.pyi`` (the
    constructor of a PyO3 class): name -> (annotation, default)."""
    tree = ast.parse((ROOT / "python" / "ringq" / "_core.pyi").read_text())
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    init = next(n for n in engine.body if isinstance(n, ast.FunctionDef) and n.name == "__new__")
    assert [a.arg for a in init.args.args] == ["cls", "path"]
    out: dict[str, tuple[str, object]] = {}
    for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True):
        assert arg.annotation is not None and default is not None, arg.arg
        out[arg.arg] = (ast.unparse(arg.annotation), ast.literal_eval(default))
    return out


def test_the_stub_and_the_engine_take_what_the_table_passes() -> None:
    stub = {k: v for k, v in stub_engine_options().items() if not k.startswith("_")}
    assert set(stub) == set(NAMES)
    for o in QUEUE_OPTIONS:
        annotation, default = stub[o.name]
        # None: the engine's default; anything else is the table's.
        assert default in (None, o.default), o.name
        assert annotation == STUB_TYPES[o.kind] + (" | None" if default is None else ""), o.name
    # The PyO3 signature (`#[pyo3(signature = ...)]`) is the stub's.
    engine = inspect.signature(_core.Engine).parameters
    assert next(iter(engine)) == "path"
    assert {k: p.default for k, p in engine.items() if k in stub} == {
        k: default for k, (_, default) in stub.items()
    }
    assert {k for k in engine if not k.startswith("_")} == {"path", *stub}


def test_queue_passes_every_option_to_the_engine(tmp_path: Path) -> None:
    passed: list[dict[str, object]] = []

    class Recording(ringq.Queue):
        def _open_backend(
            self, path: str | os.PathLike[str], settings: dict[str, object]
        ) -> Backend:
            passed.append(dict(settings))
            return super()._open_backend(path, settings)

    Recording(tmp_path / "a").close()
    Recording(tmp_path / "b", options=QueueOptions(capacity=7)).close()
    assert passed == [dict(KEYWORD_DEFAULTS), {**KEYWORD_DEFAULTS, "capacity": 7}]
    assert list(passed[0]) == NAMES


def test_the_engine_defaults_are_the_tables() -> None:
    engine = _core._default_options()
    signature = inspect.signature(_core.Engine).parameters
    # Every option but shared (not an engine setting: which engine opens).
    assert set(engine) == {o.name for o in QUEUE_OPTIONS if o.name != "shared"}
    for o in QUEUE_OPTIONS:
        given = signature[o.name].default
        default = engine[o.name] if given is None else given
        assert default == effective_default(o), o.name
        assert type(default) is type(effective_default(o)), o.name
        if o.name in engine:  # Rust's Options::default, whatever the signature says
            assert engine[o.name] == effective_default(o), o.name


def bad_values(o: QueueOption) -> list[object]:
    """Values just outside the option's range."""
    if o.kind == "int":
        assert o.ge is not None
        return [o.ge - 1, 2**63 if o.le is None else o.le + 1]
    if o.kind == "seconds":
        low = -1 if o.ge is not None else o.gt
        return [low, MAX_SECONDS + 1]
    return []


NUMBERS = [o for o in QUEUE_OPTIONS if bad_values(o)]


@pytest.mark.parametrize("option", NUMBERS, ids=[o.name for o in NUMBERS])
def test_the_engine_checks_the_tables_ranges(tmp_path: Path, option: QueueOption) -> None:
    """The engine refuses values out of the table's range in the table's words
    (a keyword of ``ringq.Queue`` is checked by the engine, a ``QueueOptions``
    field by the table: the two must agree)."""
    for value in bad_values(option):
        with pytest.raises(ringq.ConfigError) as info:
            ringq.Queue(tmp_path / "q", **{option.name: value})
        p = _Problems()
        option.check(p, value)
        (ours,) = p.items
        ours = ours.replace("(must be None or ", "(must be ")  # the engine's None is implicit
        assert str(info.value) == f"invalid option: {ours}"
    assert not (tmp_path / "q").exists()


def test_the_engine_takes_every_choice(tmp_path: Path) -> None:
    (durability,) = (o for o in QUEUE_OPTIONS if o.kind == "choice")
    for choice in durability.choices:
        engine = _core.Engine(str(tmp_path / choice), durability=choice, fsync_interval=0.01)
        assert engine.durability == choice
        engine.close()
    with pytest.raises(ringq.ConfigError, match="durability"):
        _core.Engine(str(tmp_path / "bad"), durability="fast")


# -- the docs -----------------------------------------------------------------------------------


def test_the_docstring_table_is_rendered_from_the_table() -> None:
    assert config.__doc__ is not None
    assert render_options_table() in config.__doc__, (
        "paste ringq.config.render_options_table() into ringq/config.py's docstring:\n"
        + render_options_table()
    )


README = ROOT / "README.md"


def readme_value(text: str) -> object:
    """``100 000``, ``0.05 s``, ``16 MiB``, ``1 000 000 records``, ```"batch"```."""
    text = text.strip()
    if text.startswith("`"):
        return ast.literal_eval(text.strip("`"))
    m = re.fullmatch(r"([\d ]+(?:\.\d+)?)(?: (s|KiB|MiB|records))?", text)
    assert m is not None, text
    number, unit = m[1].replace(" ", ""), m[2]
    if unit == "s":
        return float(number)
    return int(number) * {"KiB": 1024, "MiB": 1024 * 1024}.get(unit, 1)


def readme_options() -> dict[str, Any]:
    """The README's options table: option -> default."""
    section = README.read_text().split("### Options (defaults)\n", 1)[1]
    rows = section.strip().split("\n\n", 1)[0].splitlines()
    assert rows[0] == "| option | default | meaning |"
    out: dict[str, Any] = {}
    for row in rows[2:]:
        names_cell, defaults_cell, _ = row.strip("|").split(" | ", 2)
        names = re.findall(r"`(\w+)`", names_cell)
        defaults = defaults_cell.split(" / ")
        assert len(names) == len(defaults), row
        for name, default in zip(names, defaults, strict=True):
            assert name not in out, name
            out[name] = readme_value(default)
    return out


def test_the_readme_table_lists_every_option_with_its_default() -> None:
    assert readme_options() == {o.name: effective_default(o) for o in QUEUE_OPTIONS}
