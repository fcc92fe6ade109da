"""tqdm progress bars on a terminal; nothing in a log or CI."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from tqdm import tqdm


def progress[T](items: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
    yield from tqdm(items, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty(), unit="")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
