"""Plain-text tables of training results."""
import math


def _fmt(value, spec=".4f"):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_training_summary(results):
    """One row per network: epochs, best epoch, best validation IoU, parameters, seconds, status."""
    header = f"{'network':<11}{'epochs':>7}{'best':>6}{'val IoU':>9}{'params':>10}{'seconds':>9}  status"
    lines = [header, "-" * len(header)]
    for r in results:
        if r.get("failed"):
            lines.append(f"{r['name']:<11}{'':>7}{'':>6}{'':>9}{'':>10}{'':>9}  failed")
            continue
        status = "already done" if r.get("skipped") else ("stopped early" if r.get("stopped_early") else "done")
        lines.append(
            f"{r['name']:<11}{r['epochs_run']:>7}{r['best_epoch']:>6}{_fmt(r['best_val_iou']):>9}"
            f"{r['parameters']:>10,}{r['seconds']:>9.0f}  {status}"
        )
    return "\n".join(lines)
