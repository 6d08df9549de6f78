"""The playground as the tests drive it: through its data-testid controls, like other tools do."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import FilePayload, Locator, Page

FINAL = ("completed", "failed", "cancelled")
BATCH_FINAL = ("completed", "partial", "failed", "cancelled")
# Reads an <img> back through a canvas, in the page, as the page itself could.
READ_PIXELS = """(img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  let coloured = 0;
  let min = 255;
  let max = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] !== data[i + 1] || data[i + 1] !== data[i + 2]) coloured += 1;
    min = Math.min(min, data[i]);
    max = Math.max(max, data[i]);
  }
  return { width: canvas.width, height: canvas.height, coloured, min, max };
}"""
# Every value the progress bar takes from now on.
RECORD_PROGRESS = """() => {
  const bar = document.querySelector('[data-testid="progress"]');
  window.progressSeen = [bar.value];
  new MutationObserver(() => window.progressSeen.push(bar.value))
    .observe(bar, { attributes: true, attributeFilter: ["value"] });
}"""


def tab_to(page: Page, selector: str, presses: int = 60) -> None:
    """Presses Tab until the focus is on `selector`: it must be reachable by keyboard."""
    for _ in range(presses):
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} is not reachable with Tab")


def image_file(name: str, data: bytes, mime: str = "image/jpeg") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


class Playground:
    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def open(self, *, wait_models: bool = True) -> Playground:
        self.page.goto(self.url + "/")
        if wait_models:
            self.page.locator("#model option:not([disabled])").first.wait_for(state="attached")
        return self

    def pick(self, *files: FilePayload) -> None:
        self.by("file-input").set_input_files(list(files))

    def edit(self, prompt: str, model: str, **advanced: str) -> None:
        self.by("prompt").fill(prompt)
        self.by("model").select_option(model)
        if advanced:
            self.page.locator("#advanced > summary").click()
            for field, value in advanced.items():
                self.page.locator(f"#{field}").fill(value)

    def process(self) -> None:
        self.by("process").click()

    @property
    def status(self) -> str:
        return self.page.locator("#stage").get_attribute("data-status") or ""

    @property
    def job_id(self) -> str:
        return self.page.locator("#stage").get_attribute("data-job-id") or ""

    def wait_status(self, *statuses: str, timeout_s: float = 120) -> str:
        self.page.wait_for_function(
            "(wanted) => wanted.includes(document.getElementById('stage').dataset.status)",
            arg=list(statuses),
            timeout=timeout_s * 1000,
        )
        return self.status

    def wait_result(self, timeout_s: float = 120) -> None:
        self.wait_status(*FINAL, timeout_s=timeout_s)
        assert self.status == "completed", self.page.locator("#error").inner_text()
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=\"result-image\"]').naturalWidth > 0"
        )

    def result_pixels(self) -> dict[str, Any]:
        pixels: dict[str, Any] = self.by("result-image").evaluate(READ_PIXELS)
        return pixels

    def input_pixels(self) -> dict[str, Any]:
        pixels: dict[str, Any] = self.page.locator("#before-image").evaluate(READ_PIXELS)
        return pixels

    def record_progress(self) -> None:
        self.page.evaluate(RECORD_PROGRESS)

    def progress_seen(self) -> list[float]:
        seen: list[float] = self.page.evaluate("() => window.progressSeen")
        return seen

    def wait_batch(self, timeout_s: float = 120) -> str:
        """Waits for the batch on the stage to end; its status, as the page shows it."""
        return self.wait_status(*BATCH_FINAL, timeout_s=timeout_s)

    def wait_batch_results(self, count: int) -> None:
        results = self.by("batch-result")
        results.nth(count - 1).wait_for(state="attached")
        assert results.count() == count
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"batch-result\"]')]"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )

    def batch_pixels(self) -> list[dict[str, Any]]:
        """What each batch result's pixels are, read in the page, in item order."""
        return [img.evaluate(READ_PIXELS) for img in self.by("batch-result").all()]

    def batch_items(self) -> list[dict[str, str]]:
        return [
            {
                "status": item.get_attribute("data-status") or "",
                "job_id": item.get_attribute("data-job-id") or "",
                "text": item.inner_text(),
            }
            for item in self.by("batch-item").all()
        ]

    def history(self) -> list[dict[str, str]]:
        rows = self.page.locator(".history-item")
        return [
            {
                "status": row.get_attribute("data-status") or "",
                "text": row.inner_text(),
            }
            for row in rows.all()
        ]
