"""Regenerate docs/models/<name>.md and <name>_diagram.png from the shipped models.

A file docs/models/<name>_sensitivity.md (written by a script in fits/) is appended to the
model's page when present.

    python docs/generate.py
"""

from pathlib import Path

import pkpd_cart as pk
from pkpd_cart.model.diagram import draw_diagram
from pkpd_cart.model.docs import model_page

OUT = Path(__file__).resolve().parent / "models"


def page(name: str) -> str:
    """The page text of a shipped model, as committed."""
    extra = OUT / f"{name}_sensitivity.md"
    appendix = extra.read_text() if extra.exists() else ""
    return model_page(pk.load_model(name), diagram=f"{name}_diagram.png", appendix=appendix)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in pk.available_models():
        (OUT / f"{name}.md").write_text(page(name))
        draw_diagram(pk.load_model(name), OUT / f"{name}_diagram.png")
        print(f"wrote {OUT / name}.md and {name}_diagram.png")


if __name__ == "__main__":
    main()
