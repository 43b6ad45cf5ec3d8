"""How the training configs (ModelConfig, LossConfig, AugmentConfig, CameraEffects) report a wrong value, once
for a Python caller and once for dm-train, without either of them spelling the other's names.

A config raises `ConfigValueError`: a ValueError whose text names the config's field ("width must be a
positive number up to 16, got 0.0"). It also keeps the field and what is wrong with it, so that
`ConfigValueError.worded` can say the same with any other name for the fields: training.cli names the
options that set them ("--width: must be ..."), in one place (its `option_of`). `check_fields` runs a config's
table of checks (as pipeline.checks does for the option classes that name their options). Torch-free.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable


class ConfigValueError(ValueError):
    """A config value that is wrong.

    field: the field it is about; None when `problem` names its fields itself (it is then the whole message).
    problem: what is wrong, after the field's name. `{name}` in it, for a name in `mentions`, is another
        field's name, worded like the field's own.
    message: the text for a Python caller when it should not be the default `field: problem`.
    """

    def __init__(self, field: str | None, problem: str, *, mentions: tuple[str, ...] = (),
                 message: str | None = None):
        self.field, self.problem, self.mentions = field, problem, mentions
        super().__init__(message if message is not None else self.worded(lambda name: name))

    def worded(self, name_of: Callable[[str], str]) -> str:
        """The message with every field named by `name_of` (e.g. the command-line option that sets it)."""
        problem = self.problem
        for name in self.mentions:
            problem = problem.replace("{" + name + "}", name_of(name))
        return problem if self.field is None else f"{name_of(self.field)}: {problem}"


def check_fields(config: Any, checks: Iterable[tuple[str, bool, str]]) -> None:
    """Raise the first failed check (field, ok, what it must be) of `config`: "field must be ..., got VALUE"
    (on the command line "--option: must be ..., got VALUE")."""
    for field, ok, expected in checks:
        if not ok:
            problem = f"must be {expected}, got {getattr(config, field)!r}"
            raise ConfigValueError(field, problem, message=f"{field} {problem}")
