"""Published results shown as reference rows beside a report's runs (test-split numbers)."""

from __future__ import annotations

from typing import Any

MEDMNIST_SOURCE = "Yang et al., MedMNIST v2, Scientific Data 2023, Table 3"
# BreastMNIST test AUC / ACC of the MedMNIST v2 baselines.
MEDMNIST_BREASTMNIST = {
    "ResNet-18 (28)": (0.901, 0.863), "ResNet-18 (224)": (0.891, 0.833),
    "ResNet-50 (28)": (0.857, 0.812), "ResNet-50 (224)": (0.866, 0.842),
    "auto-sklearn": (0.836, 0.803), "AutoKeras": (0.871, 0.831),
    "Google AutoML Vision": (0.919, 0.861),
}
IDC_STUDY_SOURCE = "IDC patch CNN study: Xception with class weighting, its best row"
JANOWCZYK_SOURCE = ("Janowczyk & Madabhushi, J Pathol Inform 2016 (patient-level split; "
                    "F1 and balanced accuracy)")

REFERENCES: dict[str, list[dict[str, Any]]] = {
    "breastmnist": [{"name": name, "source": MEDMNIST_SOURCE, "auc": auc, "acc": acc}
                    for name, (auc, acc) in MEDMNIST_BREASTMNIST.items()],
    "idc": [{"name": "Xception, class weights (study)", "source": IDC_STUDY_SOURCE,
             "acc": 0.86, "recall": 0.84, "specificity": 0.87},
            {"name": "AlexNet patches (Janowczyk 2016)", "source": JANOWCZYK_SOURCE,
             "balanced_acc": 0.8423, "f1": 0.7648}],
}


def reference_rows(study: str | None) -> list[dict[str, Any]]:
    """The reference rows of ``study`` (a key of ``REFERENCES``), none for ``None``."""
    if study is None:
        return []
    if study not in REFERENCES:
        raise ValueError(f"table.reference={study!r}; choose null or one of {list(REFERENCES)}")
    return REFERENCES[study]
