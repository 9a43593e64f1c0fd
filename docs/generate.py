"""Regenerate docs/models/<name>.md from the shipped symbolic models.

python docs/generate.py
"""

from pathlib import Path

import pkpd_cart as pk
from pkpd_cart.docs import model_page

OUT = Path(__file__).resolve().parent / "models"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in pk.available_models():
        path = OUT / f"{name}.md"
        path.write_text(model_page(pk.load_model(name)))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
