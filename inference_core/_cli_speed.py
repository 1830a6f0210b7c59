"""The command line's options for a faster server: the KV cache's type and speculation.

Shared by the commands that load a model (`run`, `chat`, `embed`, `info --load`) and by
plugins' commands that start a server (`inference serve`), so both spell them alike.
"""

from __future__ import annotations

import argparse
from typing import Any

from .types import CACHE_TYPES, SPECULATIVE_MODES

__all__ = ["add_speed_options", "speed_fields"]


def add_speed_options(group: argparse._ArgumentGroup) -> None:
    """--cache-type, --speculative, --draft-model, --draft-max, --draft-min."""
    group.add_argument(
        "--cache-type",
        choices=CACHE_TYPES,
        default="f16",
        help="the KV cache's type: q8_0 and q4_0 take a half and a quarter of the memory "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--speculative",
        choices=SPECULATIVE_MODES,
        help="guess tokens ahead: ngram from the text so far, draft with --draft-model "
        "(default: off, or draft with --draft-model)",
    )
    group.add_argument(
        "--draft-model",
        metavar="PATH",
        help="a small model of the same vocabulary that drafts (a GGUF path or hf:// name)",
    )
    group.add_argument(
        "--draft-max", type=int, default=0, metavar="N", help="most tokens drafted at a time"
    )
    group.add_argument(
        "--draft-min", type=int, default=0, metavar="N", help="fewest tokens drafted at a time"
    )


def speed_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The `LoadConfig` fields the options give; speculative only where one was given, so
    that a draft model alone means drafting with it."""
    fields: dict[str, Any] = {
        "cache_type": args.cache_type,
        "draft_model": args.draft_model,
        "draft_max": args.draft_max,
        "draft_min": args.draft_min,
    }
    if args.speculative is not None:
        fields["speculative"] = args.speculative
    return fields
