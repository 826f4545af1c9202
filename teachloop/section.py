"""``Section``: the base of every config section (pydantic v2), shared by the components.

Each component declares its own section beside its code (STYLE.md §3: the teacher loop's in
agents/config.py, the run tree in teachloop/config.py); they all derive from ``Section`` so
the whole tree behaves one way:

* ``extra="forbid"``: an unknown key is an error (teachloop/config.py turns it into one line
  naming the closest valid keys);
* every field has ``Field(description=...)``: ``teachloop config --explain`` lists it and
  ``teachloop config --schema`` puts it into the JSON schema editors validate presets with;
* lax coercion as in YAML files and ``--set`` values: ``"1e-6"`` is a float (PyYAML reads it
  as a string), ``"a,b"`` is a list of strings (``StrList``), a number is a string where a
  string is wanted; assignments are validated too;
* an empty YAML section (``teacher:`` with nothing under it) means the section's defaults.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


def _split_commas(v: Any) -> Any:
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


StrList = Annotated[list[str], BeforeValidator(_split_commas)]
"""A list of strings; ``"a.b,c.d"`` (a ``--set`` value) is read as ``["a.b", "c.d"]``."""


class Section(BaseModel):
    """A config section: see the module docstring."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              coerce_numbers_to_str=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, f in cls.model_fields.items():
            tp = f.annotation
            if out.get(name, ...) is None and isinstance(tp, type) and issubclass(tp, BaseModel):
                out[name] = {}
        return out
