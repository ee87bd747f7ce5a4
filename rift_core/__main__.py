"""`python -m rift_core <command> ...`: each command's command line lives in rift_core/cli/<command>.py."""
import importlib
import sys

COMMANDS = ("train", "generate", "label", "stats", "evaluate", "toy", "data")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m rift_core {" + ",".join(COMMANDS) + "} [--help]", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    # one command's modules only: `train` alone needs torch at import
    importlib.import_module(f"rift_core.cli.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
