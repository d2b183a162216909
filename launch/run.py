"""Entry point: python launch/run.py --gin_file=gin_configs/tiny_picor.gin [--gin_bindings="X.y = v"]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.run.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
