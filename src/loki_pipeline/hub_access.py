"""Talk to the Hugging Face hub so that its two common failures end in one line each.

An unreachable hub (no network, a firewall, a wrong ``HF_ENDPOINT``) made ``huggingface_hub``
retry each request for about 27 s and end in 60 lines of traceback; a misspelt repository
ended in another traceback. ``hub_local_only`` asks the hub once, quickly (``PROBE_SECONDS``),
so that an unreachable one is read from the local cache only, without retries, and
``hub_errors`` turns what the hub raises into a ``LokiInputError`` saying which it was:
offline (and not in the local cache) or not found (misspelt, private or gated), and what to do.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from loki_pipeline.errors import LokiInputError
from loki_pipeline.safe_text import clip

log = logging.getLogger(__name__)

#: Seconds the reachability probe waits for the hub's first answer.
PROBE_SECONDS = 5.0
_TRANSPORT = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError")


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub's endpoint answers an HTTP request at all (any status) within ``timeout``."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to get an answer is "unreachable"
        return False
    return True


def hub_local_only() -> bool:
    """``True`` when downloads must use the local cache only: the hub did not answer the probe.

    In offline mode (``HF_HUB_OFFLINE=1``) ``huggingface_hub`` already reads the cache only and
    nothing is probed (``False``: no extra argument is needed).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if hub_reachable():
        return False
    log.warning("the hub at %s does not answer; using the local cache only", constants.ENDPOINT)
    return True


def _offline(err: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        if type(seen).__name__ in _TRANSPORT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn the hub's failures inside the block into one ``LokiInputError`` line about ``what``
    (e.g. ``hf:owner/name@rev``): offline vs not found, and what to do about each."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LokiInputError:
        raise
    except GatedRepoError:
        raise LokiInputError(
            f"{what}: a gated repository: accept its terms on the hub and log in "
            "(`hf auth login`), or prepare a downloaded copy with local:<folder>"
        ) from None
    except RepositoryNotFoundError:
        raise _not_found(what, constants.ENDPOINT) from None
    except Exception as err:
        if type(err).__name__ == "DatasetNotFoundError":  # datasets' own, for hf: data sources
            raise _not_found(what, constants.ENDPOINT) from None
        if _offline(err):
            mode = " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
            raise LokiInputError(
                f"{what}: offline: the hub ({constants.ENDPOINT}) cannot be reached{mode} and "
                f"the files are not in the local cache ({constants.HF_HUB_CACHE}); connect and "
                "rerun, or download it once elsewhere and use local:<folder>"
            ) from None
        if isinstance(err, RevisionNotFoundError):
            raise LokiInputError(
                f"{what}: the repository has no such revision: check the branch, tag or commit "
                "after '@'"
            ) from None
        if isinstance(err, RemoteEntryNotFoundError):
            raise LokiInputError(
                f"{what}: the repository lacks a file it needs ({clip(err, 200)})"
            ) from None
        if isinstance(err, HfHubHTTPError):
            raise LokiInputError(f"{what}: the hub refused the request ({clip(err)})") from None
        raise


def _not_found(what: str, endpoint: str) -> LokiInputError:
    return LokiInputError(
        f"{what}: not found on the hub ({endpoint}): check the spelling "
        "(hf:<owner>/<name>[@revision]); a private repository needs `hf auth login`"
    )
