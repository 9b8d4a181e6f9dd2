"""The help formatter of every command-line tool (trainer, worker, replayer, tail, demo).

Lives here because ``training``, ``worker`` and ``deploy`` all use it and may import ``detector``.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help ("(default: 0.05)"), keeps descriptions as written.

    A default of ``None``, ``False`` or an empty string or list (an absent option, an off flag, no
    items) is not shown: the help itself says what leaving the option out means; neither is one
    the help already states ("(default: ...)").
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default, text = action.default, action.help or ""
        empty = isinstance(default, str | list | tuple) and not default
        if default is None or default is False or empty or "(default:" in text:
            return action.help
        return super()._get_help_string(action)


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its subcommands' parsers :class:`DefaultsHelpFormatter`; return it.

    Done after the tree is built, so the modules that add subcommands need not know about it.
    """
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
    return parser
