"""Which stored numbers the trackers show, and under which names (one list for all of them)."""
from __future__ import annotations

__all__ = ["EPOCH_KEYS", "FINAL_KEYS", "epoch_scalars", "final_scalars"]

#: metrics.json keys sent per epoch, and their name in the trackers (train_acc is a top-1)
EPOCH_KEYS = {"train_loss": "train_loss", "train_acc": "train_top1", "val_loss": "val_loss",
              "val_top1": "val_top1", "val_top5": "val_top5", "test_loss": "test_loss",
              "test_top1": "test_top1", "test_top5": "test_top5", "lr": "lr",
              "img_per_s": "img_per_s", "data_wait_share": "data_wait_share",
              "epoch_time_s": "epoch_time_s", "skipped_images": "skipped_images"}
#: result.json fields logged once, after the run, as ``final_<field>``
FINAL_KEYS = ("top1", "top5", "val_top1", "val_top5", "train_time_s", "img_per_s",
              "speed_train_img_s", "speed_infer_img_s", "gmacs", "params")


def epoch_scalars(metrics: dict) -> dict[str, float]:
    """The numbers of one metrics.json entry a tracker shows, under their tracker names."""
    return {name: float(metrics[key]) for key, name in EPOCH_KEYS.items()
            if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics[key], bool)}


def final_scalars(row: dict) -> dict[str, float]:
    return {f"final_{k}": float(row[k]) for k in FINAL_KEYS
            if isinstance(row.get(k), (int, float)) and not isinstance(row[k], bool)}
