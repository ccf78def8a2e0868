"""Lifeguard: real-time child-safety and content moderation on Apache Flink."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
__version__ = "0.1.0"
