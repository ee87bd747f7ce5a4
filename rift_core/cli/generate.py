"""`python -m rift_core generate`: sample K responses per problem into resumable chunks."""
from dataclasses import dataclass, field

from rift_core.cli import config_parser
from rift_core.data import ProblemFormat, load_problems
from rift_core.generation import GenerationConfig, generate_rollouts


@dataclass
class GenerateArgs:
    model: str = field(metadata={"help": "Local model dir (or a hub id when online)."})
    problems: str = field(metadata={"help": "A load_problems source: known name, toy:<split>, file, hub id."})
    out: str = field(metadata={"help": "Output folder (chunk files + manifest; rerun to resume)."})
    data_root: str = field(default="../shared/data", metadata={"help": "Folder of the known data sets."})
    limit: int | None = field(default=None, metadata={"help": "Random subset of this many problems (drawn with --seed)."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip (and report) bad problem rows."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    wait_for_lock: bool = field(default=False, metadata={
        "help": "When another run is writing --out, wait for it to finish instead of failing at once."})


def main(argv: list[str] | None = None) -> None:
    parser = config_parser([GenerateArgs, GenerationConfig, ProblemFormat], prog="python -m rift_core generate",
                           description="Sample K responses per problem; resumable chunks under --out.")
    a, cfg, fmt = parser.parse_args_and_config(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    problems = load_problems(a.problems, data_root=a.data_root, limit=a.limit, seed=cfg.seed, skip_bad=a.skip_bad,
                             fmt=fmt)
    rollouts = generate_rollouts(problems, a.model, cfg, out_dir=a.out, wait_for_lock=a.wait_for_lock)
    cut = (rollouts["finish_reason"] == "length").mean()
    print(f"{rollouts.height} rollouts for {problems.height} problems in {a.out} "
          f"(mean {rollouts['num_tokens'].mean():.1f} tokens, {cut:.1%} cut at --max-new-tokens)")
