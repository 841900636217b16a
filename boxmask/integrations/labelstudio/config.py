"""What boxmask needs from a Label Studio labelling config, read with the SDK's own parser.

A project's config (XML) names its controls: boxmask writes masks into the `BrushLabels` control
(and polygons into `PolygonLabels` when there is one), reads boxes from `RectangleLabels`, and
takes the image URL from the task data key of the `Image` they point to. Names are whatever the
project owner chose, so they are read here, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface


class LabelConfigError(ValueError):
    """A labelling config boxmask cannot answer for; the message says what it lacks."""


@dataclass(frozen=True)
class Control:
    """One control tag: its `name` (results' `from_name`), its `toName`, and its labels."""

    from_name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelConfig:
    """The controls of one image in a labelling config.

    brush: the `BrushLabels` control masks are written to (None if the config has only polygons).
    polygon: the `PolygonLabels` control polygons are written to, if any.
    rectangles: the names of `RectangleLabels` controls on the same image (boxes come from them).
    rectangle: the first of them, used to write detector boxes in pre-annotation.
    image_key: the task data key holding the image URL (`$image` -> "image").
    """

    brush: Control | None
    polygon: Control | None
    rectangles: tuple[str, ...]
    rectangle: Control | None
    image_key: str

    @property
    def mask_labels(self) -> tuple[str, ...]:
        """Label names of the mask controls (the tool side of the label map)."""
        labels: list[str] = []
        for control in (self.brush, self.polygon):
            if control is not None:
                labels += [name for name in control.labels if name not in labels]
        return tuple(labels)

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        """Parse a labelling config; raises `LabelConfigError` if it has no mask control."""
        if not xml or not xml.strip():
            raise LabelConfigError("the request carries no label_config")
        try:
            interface = LabelInterface(xml)
        except Exception as exc:  # the SDK raises several types for malformed XML
            raise LabelConfigError(f"label_config is not a valid Label Studio config: {exc}") from exc

        def first(tag: str) -> Control | None:
            try:
                from_name, to_name, _ = interface.get_first_tag_occurence(tag, "Image")
            except ValueError:
                return None
            return Control(from_name, to_name, tuple(interface.get_control(from_name).labels or ()))

        brush, polygon = first("BrushLabels"), first("PolygonLabels")
        mask_control = brush or polygon
        if mask_control is None:
            raise LabelConfigError(
                "label_config has no BrushLabels or PolygonLabels control on an Image: boxmask "
                "answers with masks, add e.g. <BrushLabels name=\"mask\" toName=\"image\"> with "
                "the same <Label>s as the RectangleLabels")
        image = interface.get_object(mask_control.to_name)
        image_key = (image.value or "").lstrip("$")
        if not image_key:
            raise LabelConfigError(f"the Image tag {mask_control.to_name!r} has no value=\"$key\"")
        rectangles = tuple(
            c.name for c in interface.controls
            if c.tag == "RectangleLabels" and mask_control.to_name in (c.to_name or [])
        )
        rectangle = None
        if rectangles:
            control = interface.get_control(rectangles[0])
            rectangle = Control(control.name, mask_control.to_name, tuple(control.labels or ()))
        return cls(brush=brush, polygon=polygon, rectangles=rectangles, rectangle=rectangle,
                   image_key=image_key)


def labeling_config(category_names: list[str], image_key: str = "image") -> str:
    """A labelling config for a model's categories: a smart `RectangleLabels` (the annotator
    draws boxes) and a `BrushLabels` (boxmask answers with masks) with one `<Label>` per
    category, in the model's order. For COCO's 80 that is 80 labels typed by nobody; edit the
    names and map them back with ``BOXMASK_LABELSTUDIO_LABEL_MAP`` if the team prefers others.
    """
    from xml.sax.saxutils import quoteattr

    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in category_names)
    return (f'<View>\n  <Image name="image" value="${image_key}"/>\n'
            f'  <RectangleLabels name="box" toName="image" smart="true">\n{labels}\n'
            f'  </RectangleLabels>\n  <BrushLabels name="mask" toName="image">\n{labels}\n'
            f'  </BrushLabels>\n</View>\n')
