"""The exported page in headless Chromium: the folder's size, the time from navigation until every control works
(window.pageReady, performance.now() in the page), and the time to draw a new 8x8 grid (the page's own
performance.now() around session.run and the painting), median over clicks.

    python bench/site.py SITE_DIR [--loads 5] [--clicks 30]

Serves SITE_DIR with `dcgan.py serve` on a free port and drives Debian's chromium through chromedriver.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("site")
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--clicks", type=int, default=30)
    a = p.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    site = Path(a.site)
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    biggest = sorted(((f.stat().st_size, f.name) for f in site.rglob("*") if f.is_file()), reverse=True)[:3]
    print(f"folder: {size / 1e6:.2f} MB in all; largest: " + ", ".join(f"{n} {s / 1e6:.2f} MB" for s, n in biggest))
    server = subprocess.Popen([sys.executable, str(ROOT / "dcgan.py"), "serve", str(site), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        ready, grids = [], []
        for _ in range(a.loads):
            driver.get(url)
            while not driver.execute_script("return window.pageReady"):
                time.sleep(0.02)
            ready.append(driver.execute_script("return window.pageReady"))
            for _ in range(a.clicks):
                n = driver.execute_script("return window.timings.length")
                driver.find_element("id", "new").click()
                while driver.execute_script("return window.timings.length") == n:
                    time.sleep(0.005)
            grids += driver.execute_script("return window.timings.slice(1)")  # the clicks' grids, not the first
        print(f"interactive after load: median {statistics.median(ready):.0f} ms over {a.loads} loads "
              f"(min {min(ready):.0f}, max {max(ready):.0f})")
        print(f"new 8x8 grid: median {statistics.median(grids):.1f} ms over {len(grids)} clicks "
              f"(min {min(grids):.1f}, max {max(grids):.1f})")
    finally:
        driver.quit()
        server.terminate()


if __name__ == "__main__":
    main()
