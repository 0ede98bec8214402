"""The text template: how an item becomes model text, and whether rendering left anything out."""

from __future__ import annotations

from core.text_template import DEFAULT_TEMPLATE, TextTemplate


def test_render_item_says_when_a_value_or_attributes_were_left_out():
    assert DEFAULT_TEMPLATE.render_item({"title": "Oak table", "brand": "Acme"}) == (
        "Oak table | brand: Acme",
        False,
    )
    text, cut = DEFAULT_TEMPLATE.render_item({"title": "x" * 250})
    assert cut and text == "x" * 200
    small = TextTemplate(max_attributes=1)
    assert small.render_item({"title": "t", "attributes": {"a": "1", "b": "2"}}) == ("t | a: 1", True)
    # Attributes past the limit that would not render anyway (empty) leave nothing out.
    assert small.render_item({"title": "t", "attributes": {"a": "1", "b": ""}}) == ("t | a: 1", False)
    assert DEFAULT_TEMPLATE.item_text({"title": "x" * 250}) == text
