"""The result document (the trainer's output contract, see README.md).

It doubles as the Kubernetes termination message, hence the hard limit: the JSON text
is always under 4,096 bytes. A long `validationAccuracy` list keeps its last epochs;
`validationAccuracyFirstEpoch` (0-based) then says which epoch its first entry is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

API_VERSION = "kubenas.io/v1alpha1"
KIND = "TrialResult"
MAX_BYTES = 4096  # exclusive: len(json.dumps(doc).encode()) < MAX_BYTES
MAX_MESSAGE_CHARS = 1000
ACCURACY_DIGITS = 5


def compute_reward(validation_accuracy: Sequence[float], *, last_epochs: int, power: float) -> float:
    """Zoph & Le's CNN reward: max validation accuracy of the last `last_epochs` epochs, cubed by default."""
    if not validation_accuracy:
        raise ValueError("no validation accuracy to compute a reward from")
    return max(validation_accuracy[-last_epochs:]) ** power


def success_result(
    *,
    validation_accuracy: Sequence[float],
    reward_last_epochs: int,
    reward_power: float,
    parameters: int,
    train_seconds: float,
    dataset: str,
    device: str,
    test_accuracy: float | None = None,
) -> dict:
    """The Succeeded document, trimmed to fit. The reward is computed from the rounded
    accuracies, so a controller recomputing it from the document gets the same value."""
    accuracies = [round(float(value), ACCURACY_DIGITS) for value in validation_accuracy]
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": "Succeeded",
        "validationAccuracy": accuracies,
        "bestValidationAccuracy": max(accuracies),
        "reward": round(compute_reward(accuracies, last_epochs=reward_last_epochs, power=reward_power), 6),
        "parameters": int(parameters),
        "trainSeconds": round(float(train_seconds), 3),
        "epochs": len(accuracies),
        "dataset": dataset,
        "device": device,
    }
    if test_accuracy is not None:  # --evaluate-test: the final weights on the test split, once
        doc["testAccuracy"] = round(float(test_accuracy), ACCURACY_DIGITS)
    return fit_result(doc)


def failure_result(*, reason: str, message: str) -> dict:
    """The Failed document; the message is kept to one line and a bounded length."""
    message = " ".join(str(message).split())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return {"apiVersion": API_VERSION, "kind": KIND, "status": "Failed", "reason": reason, "message": message}


def result_json(doc: dict) -> str:
    """The document's text, exactly as written to the result file and printed."""
    return json.dumps(doc)


def fit_result(doc: dict) -> dict:
    """Return `doc`, or a copy whose validationAccuracy keeps the most last epochs that fit."""
    if _size(doc) < MAX_BYTES:
        return doc
    accuracies = doc["validationAccuracy"]

    def trimmed(keep: int) -> dict:
        first = len(accuracies) - keep
        # Insert the index right after the list it describes, for readability.
        out = {}
        for key, value in doc.items():
            out[key] = accuracies[first:] if key == "validationAccuracy" else value
            if key == "validationAccuracy":
                out["validationAccuracyFirstEpoch"] = first
        return out

    # Largest `keep` that fits; the size grows with `keep`, so bisect.
    low, high = 0, len(accuracies)  # trimmed(low) fits (assumed), trimmed(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if _size(trimmed(middle)) < MAX_BYTES:
            low = middle
        else:
            high = middle
    result = trimmed(low)
    if _size(result) >= MAX_BYTES:  # only if the other fields alone were too long: a bug
        raise ValueError("result document does not fit in 4096 bytes even without accuracies")
    return result


def write_result(doc: dict, *, path: str | None) -> None:
    """Write the document to `path` (no-op when None). OSError propagates to the caller."""
    if path:
        with open(path, "w", encoding="utf-8") as file:
            file.write(result_json(doc))


def _size(doc: dict) -> int:
    return len(result_json(doc).encode())
