"""Label names of a labeling tool <-> the model's categories.

Label Studio and CVAT both name classes with free text that a project owner typed ("Car",
"car", "vehicle"). A box's label is mapped to a model category in this order: an explicit map
entry (tool name -> model category name or id), the exact category name, then the name compared
case-insensitively. A label that none of these reach is an error that lists the model's
categories and says how to map it, never a silent guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from boxmask.runtime.card import Category, ModelCard
from boxmask.runtime.errors import UnknownLabel


class UnmappedLabel(UnknownLabel):
    """A tool label that maps to no model category; the message says how to fix the map."""

    def __init__(self, label: str, card: ModelCard, how_to_map: str) -> None:
        super().__init__(label, card.names, card.ids)
        self.args = (
            (f"label {label!r} of the labeling tool matches no category of model {card.name!r} "
            f"(categories: {', '.join(card.names)}); rename the label or map it with {how_to_map}"),
        )


class LabelMapper:
    """Maps tool label names to model categories and back.

    mapping: tool label name -> model category name (str) or COCO category id (int). Entries
    that name no model category are refused at construction, so a typo in the map fails at
    start-up rather than on the first box.
    how_to_map: the setting or option a user changes to map a label (named in errors).
    """

    def __init__(self, card: ModelCard, mapping: Mapping[str, str | int] | None = None,
                 how_to_map: str = "a label map") -> None:
        self.card = card
        self.how_to_map = how_to_map
        self._explicit: dict[str, Category] = {}
        for tool_name, target in (mapping or {}).items():
            try:
                self._explicit[tool_name] = card.resolve(target)
            except UnknownLabel as exc:
                raise UnknownLabel(target, card.names, card.ids) from exc
        self._folded = {c.name.casefold(): c for c in card.categories}

    def category(self, tool_label: str) -> Category:
        """The model category of a tool label; raises `UnmappedLabel`."""
        if tool_label in self._explicit:
            return self._explicit[tool_label]
        for c in self.card.categories:
            if c.name == tool_label:
                return c
        folded = self._folded.get(str(tool_label).casefold())
        if folded is not None:
            return folded
        raise UnmappedLabel(tool_label, self.card, self.how_to_map)

    def tool_label(self, category_id: int, tool_labels: Iterable[str]) -> str | None:
        """The first of `tool_labels` that maps to `category_id`, or None (the tool lacks it)."""
        for name in tool_labels:
            try:
                if self.category(name).id == category_id:
                    return name
            except UnknownLabel:
                continue
        return None
