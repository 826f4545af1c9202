"""A full-page PNG of a local HTML file by headless Chromium, for ``teachloop report``.

What it does: finds a Chromium binary, estimates the page's rendered height (Chromium's
``--screenshot`` captures a fixed window, not the full page), runs Chromium in its own
session with a throwaway profile and a timeout, kills the whole process group afterwards,
and crops the blank band the generous window height leaves below the page (pillow).
``png_size`` reads a PNG's width and height from its header, without pillow.

What it is not: a browser driver (no DevTools protocol, no JavaScript, no waiting for the
network: the report pages have none). It is best effort: without Chromium, or when it fails,
there is no PNG and the caller gets a one-line reason; it never raises for a Chromium problem.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CONTENT_WIDTH = 1180  # px: the report page's max content width (teachloop/report.py's CSS)
MAX_SHOT_HEIGHT = 6000  # px: the screenshot window's height cap


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def page_height(html_text: str, width: int = 1280) -> int:
    """A generous estimate of the rendered height of a report page (px), for the screenshot
    window: images at their displayed size, table rows, headings, paragraphs."""
    content = min(width - 48, CONTENT_WIDTH)
    h = 120
    for m in re.finditer(r'<img [^>]*width="(\d+)" height="(\d+)"', html_text):
        w, ih = int(m.group(1)), int(m.group(2))
        h += int(ih * min(1.0, content / max(w, 1))) + 12
    h += 26 * html_text.count("<tr")
    h += 22 * len(re.findall(r'<td class="prompt">[^<]{110,}', html_text))  # wrapped prompts
    h += 60 * html_text.count("<h2") + 36 * html_text.count("<h3")
    h += 28 * html_text.count("<p")
    return max(800, min(int(h * 1.25) + 200, MAX_SHOT_HEIGHT))


def capture(exe: str | None, html_path: Path, png_path: Path, width: int = 1280,
            height: int | None = None, timeout_s: float = 60.0) -> tuple[Path | None, str]:
    """Screenshot ``html_path`` into ``png_path`` with the Chromium at ``exe`` (None: not
    installed). (the PNG, "") on success, (None, one-line reason) otherwise. The caller finds
    ``exe`` (``find_chromium``), so a report can decide which Chromium, if any, to use."""
    if exe is None:
        return None, "no screenshot: Chromium is not installed (apt-get install chromium)"
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    if height is None:
        height = page_height(html_path.read_text(encoding="utf-8", errors="replace"), width)
    png_path.unlink(missing_ok=True)
    profile = tempfile.mkdtemp(prefix="teachloop-chromium-")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--force-device-scale-factor=1",
           f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={width},{height}",
           f"--screenshot={png_path}", html_path.as_uri()]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # Chromium's helpers share its session
            proc.communicate()
            return None, f"no screenshot: Chromium timed out after {timeout_s:.0f} s"
        finally:
            try:  # renderer/zygote children can outlive the browser process
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    except OSError as err:
        return None, f"no screenshot: could not start {exe}: {err}"
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if png_path.exists() and png_path.stat().st_size > 0:
        if _trim_bottom(png_path) and height >= MAX_SHOT_HEIGHT:
            log.warning("report screenshot: the page is taller than %d px and was cut", height)
        return png_path, ""
    tail = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return None, (f"no screenshot: Chromium exited {proc.returncode}"
                  + (f" ({tail[-1][:160]})" if tail else ""))


def _trim_bottom(png: Path, margin: int = 32) -> bool:
    """Crop the blank band the generous window height leaves below the page (pillow comes
    with matplotlib). True when content reaches the bottom edge (the page may be cut)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return False
    with Image.open(png) as im:
        rgb = im.convert("RGB")
    bg = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, bg).getbbox()
    if box is None:
        return False
    if box[3] + margin < rgb.height:
        rgb.crop((0, 0, rgb.width, box[3] + margin)).save(png)
        return False
    return True


def screenshot(html_path: str | os.PathLike[str], png_path: str | os.PathLike[str],
               width: int = 1280, *, height: int | None = None,
               timeout_s: float = 60.0) -> Path | None:
    """Render ``html_path`` with headless Chromium into ``png_path`` (``width`` px wide; the
    height is estimated from the page unless given). None, with one log line, when Chromium
    is missing or fails; never raises for a Chromium problem."""
    path, note = capture(find_chromium(), Path(html_path), Path(png_path), width, height,
                         timeout_s)
    if path is None:
        log.warning("%s", note)
    return path
