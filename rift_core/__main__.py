"""`python -m rift_core <command> ...`: each command lives in the module that owns the work."""
import importlib
import sys

COMMANDS = {
    "train": "rift_core.trainer",
    "generate": "rift_core.generation",
    "label": "rift_core.rewards",
    "stats": "rift_core.stats",
    "evaluate": "rift_core.evaluate",
    "toy": "rift_core.toy",
    "data": "rift_core.download",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m rift_core {" + ",".join(COMMANDS) + "} [--help]", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
