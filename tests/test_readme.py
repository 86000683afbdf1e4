"""The README's Python blocks run as written, in order, in one namespace (the quick start, the
adaptive MCMC snippet, the own-bijector example with its ``check_bijector`` call): a user who
copies them gets what the README says, and an API change that breaks them fails here."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_examples_it_promises():
    text = "\n".join(_python_blocks())
    for needed in ("flows.sample_and_log_prob", "chees_adaptation", "check_bijector("):
        assert needed in text, f"README's Python blocks lost {needed}"


def test_readme_python_blocks_run():
    namespace: dict = {}
    for index, block in enumerate(_python_blocks()):
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    # The quick start's shapes are what its comments say.
    assert namespace["samples"].shape == (10, 100, 2)
    assert namespace["result"].trace.shape[:2] == (1024, 500)
