"""How the program's --help, usage lines and usage errors read: two corrections to Typer's, made
once when the app is built (`install`)."""

import typer


def install():
    """Both corrections below, in every command and group."""
    _flags_show_no_value()
    _arguments_in_upper_case()


def _flags_show_no_value():
    """--help lists a flag (`--json`, `--resize`, `-h`) without a value. Typer 0.29 shows a
    flag's type (`--json <bool>`) as if it took one (and `--resize true` would read `true` as an
    image): the one method that fills an option's type column in Typer's help then gives none
    for a flag, in every command and group. A Typer without that method is left as it is."""
    option = typer.core.TyperOption
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_show_no_value", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich.flags_show_no_value = True
    option.display_type_rich = display_type_rich


def _arguments_in_upper_case():
    """A positional argument shows as its name in upper case, as Click writes it (`REF A [B]`,
    `Missing argument 'REF'`), in usage lines, help and errors of every command. Typer 0.29 writes
    `{ref} {a} [b]`: its arguments' `display_name_raw` (the name without a metavar) and
    `_usage_display_name` (braces around a required one) are replaced. A Typer without them is
    left as it is."""
    argument = typer.core.TyperArgument
    if not hasattr(argument, "_usage_display_name") or getattr(argument, "upper_case", False):
        return

    def display_name_raw(self):
        return self.metavar if self.metavar is not None else self.name.upper()

    def usage_display_name(self):
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    argument.display_name_raw = property(display_name_raw)
    argument._usage_display_name = usage_display_name
    argument.upper_case = True
