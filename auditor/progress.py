"""Progress on stderr while layers stream by (rich), shown only on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from auditor.model import Layer
from auditor.rootfs.build import LayerProgress


class RichLayerProgress(LayerProgress):
    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]layer {task.fields[index]}[/] {task.fields[digest]}"),
            BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal)
        self._tasks: dict[int, TaskID] = {}  # by layer index: layers may be read at once

    def __enter__(self) -> RichLayerProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def layer_started(self, layer: Layer, total: int | None, cached: bool) -> None:
        self.layer_done(layer)  # a layer read ahead and then again starts over
        digest = layer.digest.split(":")[1][:12] + (" (cached)" if cached else "")
        self._tasks[layer.index] = self._progress.add_task("", total=total, index=layer.index,
                                                           digest=digest)

    def advance(self, layer: Layer, n: int) -> None:
        task = self._tasks.get(layer.index)
        if task is not None:
            self._progress.advance(task, n)

    def layer_done(self, layer: Layer) -> None:
        task = self._tasks.pop(layer.index, None)
        if task is not None:
            self._progress.remove_task(task)
