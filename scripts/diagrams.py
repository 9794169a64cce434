"""Draw the GKD-Pro and GKD-Den pipeline diagrams (docs/gkd_pro.svg, docs/gkd_den.svg).

Plain SVG from a list of boxes (title + tensor shape) and arrows; no drawing library.
Run from the repository root: ``python scripts/diagrams.py``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

W_BOX, H_BOX = 170, 54
COLOURS = {"wli": "#fde0dd", "nbi": "#d0ece7", "shared": "#e8e8f8", "loss": "#fff3c4"}


def box(x: float, y: float, title: str, shape: str, kind: str) -> str:
    """A rounded box at (x, y) with a title line and a tensor-shape line."""
    return (f'<rect x="{x}" y="{y}" width="{W_BOX}" height="{H_BOX}" rx="8" '
            f'fill="{COLOURS[kind]}" stroke="#555"/>'
            f'<text x="{x + W_BOX / 2}" y="{y + 22}" class="t">{escape(title)}</text>'
            f'<text x="{x + W_BOX / 2}" y="{y + 42}" class="s">{escape(shape)}</text>')


def arrow(a: tuple[float, float], b: tuple[float, float], label: str = "") -> str:
    """A straight arrow from the right edge of box a to the left edge of box b (top-left
    corners), with an optional label above its middle."""
    x1, y1 = a[0] + W_BOX, a[1] + H_BOX / 2
    x2, y2 = b[0], b[1] + H_BOX / 2
    if b[0] <= a[0]:  # same column: from the bottom (top) of a to the top (bottom) of b
        down = b[1] > a[1]
        x1, x2 = a[0] + W_BOX / 2, b[0] + W_BOX / 2
        y1, y2 = (a[1] + H_BOX, b[1]) if down else (a[1], b[1] + H_BOX)
    text = (f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 6}" class="a">{escape(label)}</text>'
            if label else "")
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" marker-end="url(#h)"/>' + text


def svg(title: str, boxes: dict, arrows: list, width: int, height: int, note: str) -> str:
    body = "".join(box(*xy, t, s, k) for xy, t, s, k in boxes.values())
    body += "".join(arrow(boxes[a][0], boxes[b][0], lab) for a, b, lab in arrows)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
            '<style>.t{font-size:13px;text-anchor:middle;font-weight:bold}'
            '.s{font-size:12px;text-anchor:middle;font-family:monospace}'
            '.a{font-size:11px;text-anchor:middle;fill:#333}'
            '.h{font-size:16px;font-weight:bold}.n{font-size:11px;fill:#444}'
            'line{stroke:#444;stroke-width:1.5}</style>'
            '<defs><marker id="h" markerWidth="10" markerHeight="8" refX="9" refY="4" '
            'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#444"/></marker></defs>'
            f'<text x="12" y="24" class="h">{escape(title)}</text>{body}'
            f'<text x="12" y="{height - 10}" class="n">{escape(note)}</text></svg>\n')


def gkd_pro() -> str:
    c = [20, 230, 440, 650, 860]
    b = {
        "xw": ((c[0], 50), "WLI group G_c^W", "(n_W, 3, H, W)", "wli"),
        "tw": ((c[1], 50), "student + 1x1 embed", "T: (n_W, hw, d)", "wli"),
        "sw": ((c[2], 50), "+ identity e_i, concat", "S_W: (n_W*hw, d)", "wli"),
        "xn": ((c[0], 250), "NBI group G_c^N", "(n_N, 3, H, W)", "nbi"),
        "tn": ((c[1], 250), "frozen teacher, adapter", "T: (n_N, hw, d)", "nbi"),
        "sn": ((c[2], 250), "+ identity e_i, concat", "S_N: (n_N*hw, d)", "nbi"),
        "q": ((c[2], 150), "shared queries Q", "(N_q, d)", "shared"),
        "pw": ((c[3], 50), "MHA(Q, S_W, S_W)", "P_c^W: (N_q, d)", "wli"),
        "pn": ((c[3], 250), "MHA(Q, S_N, S_N)", "P_c^N: (N_q, d)", "nbi"),
        "s": ((c[3], 150), "s(A,B)=mean_k cos", "(2K, 2K) / tau", "shared"),
        "con": ((c[4], 110), "L_con", "InfoNCE +1: scalar", "loss"),
        "pcls": ((c[4], 200), "L_pcls", "logits (2K, K)", "loss"),
    }
    a = [("xw", "tw", ""), ("tw", "sw", "tokens"), ("xn", "tn", ""), ("tn", "sn", "detached"),
         ("sw", "pw", "keys, values"), ("sn", "pn", "keys, values"), ("q", "pw", "queries"),
         ("q", "pn", "queries"), ("pw", "s", ""), ("pn", "s", ""), ("s", "con", ""),
         ("pn", "pcls", "linear(mean_k P)")]
    return svg("GKD-Pro: one group -> one token sequence -> N_q prototypes", b, a, 1050, 340,
               "one step, every class c present; hw tokens per image, d channels, N_q queries")


def gkd_den() -> str:
    c = [20, 230, 440, 650, 860]
    b = {
        "xw": ((c[0], 50), "WLI image m", "(3, H, W)", "wli"),
        "cw": ((c[1], 50), "Grad-CAM -> PAR", "(H, W) in [0, 1]", "wli"),
        "lw": ((c[2], 50), "token labels", "(hw,) in {-1, 0, 1}", "wli"),
        "xn": ((c[0], 250), "NBI image n, same class", "(3, H, W)", "nbi"),
        "cn": ((c[1], 250), "teacher Grad-CAM -> PAR", "(H, W) in [0, 1]", "nbi"),
        "ln": ((c[2], 250), "token labels", "(hw,) in {-1, 0, 1}", "nbi"),
        "r": ((c[2], 150), "relation map R_mn", "(hw, hw) in {0, .5, 1}", "shared"),
        "aw": ((c[3], 50), "attention n -> m", "softmax(T_m T_n' * R)", "wli"),
        "an": ((c[3], 250), "attention m -> n", "uses R_mn', (hw, hw)", "nbi"),
        "hw": ((c[4], 50), "H_m<-n = A T_n", "(hw, d) vs T_m", "wli"),
        "hn": ((c[4], 250), "H_n<-m", "(hw, d) vs T_n", "nbi"),
        "loss": ((c[4], 150), "L_Den", "sum of 2 x (1 - cos)", "loss"),
    }
    a = [("xw", "cw", ""), ("cw", "lw", "0.7 / 0.3"), ("xn", "cn", ""),
         ("cn", "ln", "0.7 / 0.3"), ("lw", "r", ""), ("ln", "r", ""), ("r", "aw", "mask 0"),
         ("r", "an", "mask 0"), ("aw", "hw", ""), ("an", "hn", ""), ("hw", "loss", ""),
         ("hn", "loss", "")]
    return svg("GKD-Den: CAM -> PAR -> token labels -> R -> masked attention both ways -> cosine",
               b, a, 1050, 340, "for every WLI image m and NBI image n of the same class "
               "(G_c^W x G_c^N pairs); T: (hw, d) tokens; R = 0 is masked to -inf")


if __name__ == "__main__":
    out = Path("docs")
    (out / "gkd_pro.svg").write_text(gkd_pro())
    (out / "gkd_den.svg").write_text(gkd_den())
    print("wrote docs/gkd_pro.svg and docs/gkd_den.svg")
