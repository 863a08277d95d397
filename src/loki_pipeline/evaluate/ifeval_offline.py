"""IFEval without nltk's downloadable ``punkt_tab`` model (offline machines).

lm-eval's IFEval checkers split sentences (``length_constraints:number_sentences``) and words
(``change_case:capital_word_frequency``) with nltk's Punkt tokenizer, whose trained English
model ``punkt_tab`` is a download; offline, importing the task tries that download and scoring
then fails. When the model is missing, :func:`punkt_fallback` installs, for the duration of the
block, an *untrained* English Punkt model (no learned collocations, sentence starters or
orthographic context) whose only knowledge is a short abbreviation list written here. It splits
at ``.``, ``?`` and ``!`` like the trained model except around abbreviations and initials it
never learned, so sentence counts can differ from the official scorer on such text; every
other IFEval instruction is unaffected. The run's notes say so. With ``punkt_tab`` installed
(``python -m nltk.downloader punkt_tab``) nothing is changed.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Common English abbreviations (lower case, without the final period), as Punkt stores them.
ABBREVIATIONS = [
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "mt",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "a.m",
    "p.m",
    "u.s",
    "u.k",
    "no",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "inc",
    "ltd",
    "co",
    "corp",
    "fig",
    "approx",
    "dept",
    "est",
]

FALLBACK_NOTE = (
    "ifeval: nltk's punkt_tab model was not installed, so sentence and word splitting used an "
    "untrained English Punkt model with a short built-in abbreviation list "
    "(loki_pipeline.evaluate.ifeval_offline); length_constraints:number_sentences and "
    "change_case:capital_word_frequency can differ from the official scorer on text with "
    "unusual abbreviations"
)


def punkt_available() -> bool:
    """True when nltk finds the trained English ``punkt_tab`` model."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


@contextlib.contextmanager
def punkt_fallback() -> Iterator[bool]:
    """Yield True if a fallback Punkt model was installed for the block, False if not needed."""
    if punkt_available():
        yield False
        return
    import nltk

    with tempfile.TemporaryDirectory(prefix="loki-nltk-") as root:
        lang = Path(root, "tokenizers", "punkt_tab", "english")
        lang.mkdir(parents=True)
        (lang / "abbrev_types.txt").write_text("\n".join(ABBREVIATIONS) + "\n")
        for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
            (lang / name).write_text("")
        nltk.data.path.insert(0, root)
        try:
            yield True
        finally:
            nltk.data.path.remove(root)


#: langdetect's seed while IFEval scores (its detector draws random numbers; unseeded, a short
#: or mixed text can be English in one run and not in the next).
LANGDETECT_SEED = 0


@contextlib.contextmanager
def langdetect_seeded(seed: int = LANGDETECT_SEED) -> Iterator[None]:
    """Seed langdetect for the block, so IFEval's language checks (``language:response_language``
    and the English ``change_case`` instructions) give the same verdict on the same text every
    run. Neither lm-eval nor OpenCompass seeds it; a seeded verdict is one of theirs."""
    from langdetect import DetectorFactory

    before = DetectorFactory.seed
    DetectorFactory.seed = seed
    try:
        yield
    finally:
        DetectorFactory.seed = before
