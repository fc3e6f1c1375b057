"""The ``ant`` command line: a click group whose sub-commands all come from plugin hooks."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from ant import __version__
from ant.core.atomic import ACCESS_ERRORS, DISK_ERRORS, disk_error
from ant.core.errors import AntError, one_line
from ant.core.registry import Lazy


class UserError(click.ClickException):
    """An :class:`AntError` on its way out of click: one line on stderr and the error's exit code
    (2 for bad input, 3 for a diverged run, 143 for a run stopped by a signal); an empty message
    (the other ranks of a stopped run) prints nothing."""

    exit_code = AntError.exit_code
    label = AntError.label

    @classmethod
    def of(cls, error: AntError) -> UserError:
        """The click exception that reports ``error``."""
        kind = type(cls.__name__, (cls,), {"exit_code": error.exit_code, "label": error.label})
        return kind(one_line(error) if str(error) else "")

    def show(self, file: IO[Any] | None = None) -> None:
        if self.message:
            click.echo(f"{self.label}: {self.message}", err=True, file=file)


class LazyCommand(click.Command):
    """A command named by ``"module:attribute"``, imported when it runs or prints its own help.

    Listing it (``ant --help``, ``ant plugins``) reads its help from the module's source, so a
    listing imports no command module, and so no torch.
    """

    def __init__(self, name: str, target: str) -> None:
        module, _, attribute = target.partition(":")
        self.target = Lazy(module, attribute)
        super().__init__(name, help=self.target.doc())

    def load(self) -> click.Command:
        """The command itself (importing its module)."""
        command = self.target.target()
        if not isinstance(command, click.Command):
            raise AntError(f"{self.target.module}.{self.target.name} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group whose :class:`LazyCommand` entries are loaded when used, not when listed."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, LazyCommand):
            command = self.commands[cmd_name] = command.load()
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = [
            (name, self.commands[name])
            for name in self.list_commands(ctx)
            if name in self.commands and not self.commands[name].hidden
        ]
        if not listed:
            return
        width = formatter.width - 6 - max(len(name) for name, _ in listed)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(width)) for name, cmd in listed])


class PluginGroup(LazyGroup):
    """A group that adds the plugins' commands on first use and turns AntError into one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.providers: dict[str, str] = {}
        self._loaded = False

    def load_plugin_commands(self) -> None:
        """Call every plugin's ``ant_register_commands`` hook once."""
        if self._loaded:
            return
        self._loaded = True
        from ant.core.plugins import add_commands, get_plugin_manager

        try:
            self.providers = add_commands(get_plugin_manager(), self)
        except AntError as exc:
            raise UserError.of(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AntError as exc:
            raise UserError.of(exc) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            if exc.errno in DISK_ERRORS:
                raise UserError.of(disk_error(Path(exc.filename), exc)) from None
            if exc.errno in ACCESS_ERRORS:
                message = f"cannot access {exc.filename}: {exc.strerror}; check the path"
                raise UserError.of(AntError(message)) from None
            raise


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ant")
def cli() -> None:
    """ant: train diffusion models as multi-task learners over noise levels.

    Timesteps are clustered into intervals and multi-task methods (Uncertainty Weighting,
    PCGrad, Nash-MTL, ...) balance the clusters (Go et al., NeurIPS 2023).
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ant")
