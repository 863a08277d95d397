"""LoKI pipeline: Analysing (KVA) -> Selecting -> Implanting -> measuring forgetting.

The science lives in the sub-packages (``models``, ``data``, ``kva``, ``select``, ``implant``,
``train``, ``evaluate``, ``report``); the Snakemake workflow and the ``loki`` CLI are thin
wrappers around them.
"""

__version__ = "0.1.0"
