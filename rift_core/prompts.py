"""Prompt templates shared by generation, training and evaluation."""

QWEN_MATH_COT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def chat_messages(question: str, template: str = "qwen_cot") -> list[dict]:
    """The conversation that asks `question`: the Qwen2.5-Math CoT prompt, or the bare question."""
    if template == "qwen_cot":
        return [{"role": "system", "content": QWEN_MATH_COT_SYSTEM}, {"role": "user", "content": question}]
    if template == "plain":
        return [{"role": "user", "content": question}]
    raise ValueError(f"unknown prompt template {template!r}; expected 'qwen_cot' or 'plain'")


def render_prompt(tokenizer, question: str, template: str = "qwen_cot", template_kwargs: dict | None = None) -> str:
    """The prompt text ending where the assistant's answer starts.

    `template_kwargs` go to the chat template, e.g. {"enable_thinking": False} for Qwen3's non-thinking mode.
    """
    return tokenizer.apply_chat_template(
        chat_messages(question, template), tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
    )
