"""The final answer a worked solution states: the content of its last \\boxed{}."""
import re


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces matched; None if there is none.

    Like the Qwen2.5-Math parser it also reads "\\boxed 5"; an unclosed last box (a cut-off answer) gives None.
    """
    m = None
    for m in re.finditer(r"\\(?:boxed|fbox)\b", text if isinstance(text, str) else ""):
        pass
    if m is None:
        return None
    rest = text[m.end():]
    if not rest.lstrip().startswith("{"):
        word = rest.split("$")[0].split()
        return word[0] if word else None
    start = m.end() + rest.index("{") + 1
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start:j].strip() or None
    return None
