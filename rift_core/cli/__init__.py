"""The command lines of `python -m rift_core <command>`, one module per command; the library modules hold none.

Most are generated from config dataclasses, as TRL generates its own: one flag per field (both `--max_steps` and
`--max-steps`), the field's `help`, `--config file.yaml` for any of them, `none` for an optional value, JSON for a
dict, `--no-<flag>` for every bool."""
import copy
import json


def config_parser(dataclass_types: list, prog: str, description: str):
    """A `trl.TrlParser` over `dataclass_types`; `parse_args_and_config(argv)` returns one instance of each."""
    from transformers import HfArgumentParser
    from trl import TrlParser

    class Parser(TrlParser):
        @staticmethod
        def _parse_dataclass_field(parser, f):
            f = copy.copy(f)  # HfArgumentParser narrows field.type in place; the profile loader reads these types
            optional = [t for t in getattr(f.type, "__args__", ()) if t is not type(None)]
            if f.type is dict:
                f.type = _json
            elif len(optional) == 1 and optional[0] is not bool:
                f.type = _optional(optional[0])
            HfArgumentParser._parse_dataclass_field(parser, f)
            if f.type is bool and f.default is False:
                parser.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", action="store_false",
                                    dest=f.name)

    return Parser(dataclass_types, prog=prog, description=description)


def _json(text: str) -> dict:
    return json.loads(text)


def _optional(base):
    def parse(text: str):
        return None if text.lower() == "none" else base(text)

    parse.__name__ = base.__name__
    return parse
