"""Loaders on small fixtures in each dataset's official format, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.datasets import DatasetError, external_dataset_path
from distill.data.loaders import DataError, detect_format, load_pairs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_wands_official_tsvs():
    folder = FIXTURES / "wands"
    assert detect_format(folder) == "wands"
    result = load_pairs(folder)
    pairs = {(p.query_id, p.item.id): p for p in result.pairs}
    assert set(pairs) == {("0", "2"), ("0", "0"), ("1", "1"), ("1", "0")}
    chair = pairs[("0", "2")]
    assert chair.query == "salon chair" and chair.label == "Exact" and chair.raw_label == "Exact"
    assert chair.item.title == "salon styling chair"
    assert chair.item.as_mapping()["product_class"] == "Salon Chairs"
    assert chair.item.as_mapping()["category_hierarchy"] == "Commercial Business Furniture / Salon Furniture"
    # "name : value|name:value" → attributes; a piece without a name is kept, not dropped.
    assert chair.item.attributes == {"color": "Black", "feature_1": "hydraulic"}
    bed = pairs[("1", "0")]
    assert bed.label == "Partial"
    assert bed.item.attributes["dsprimaryproductstyle"] == "Modern"
    assert bed.item.attributes["material"] == "Solid Wood"
    report = result.report
    assert report.rows_read == 7 and report.pairs == 4
    assert report.skipped == {"unknown product_id": 1, "bad label": 1, "empty query": 1}
    assert any("label.csv:7" in e and "'Maybe'" in e for e in report.examples["bad label"])


def test_wands_strict_mode_names_file_line_and_value():
    with pytest.raises(DataError, match=r"label\.csv:6: product_id '9' is not in product\.csv"):
        load_pairs(FIXTURES / "wands", on_error="raise")


def _write_esci_parquet(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    examples = {
        "example_id": [1, 2, 3, 4, 5, 6],
        "query": ["usb c cable", "usb c cable", "usb c cable", "usb c cable", "kabel", "usb c cable"],
        "query_id": [7, 7, 7, 7, 8, 7],
        "product_id": ["A1", "A2", "A3", "A4", "A1", "A5"],
        "product_locale": ["us", "us", "us", "us", "es", "us"],
        "esci_label": ["E", "S", "C", "I", "E", "E"],
        "small_version": [1, 1, 1, 1, 1, 0],
        "large_version": [1, 1, 1, 1, 1, 1],
        "split": ["test", "test", "train", "test", "test", "train"],
    }
    products = {
        "product_id": ["A1", "A2", "A3", "A4", "A1", "A5"],
        "product_title": [
            "USB-C cable 2 m",
            "Lightning cable",
            "USB-C charger",
            "Phone case",
            "Cable USB-C",
            "x",
        ],
        "product_description": ["Braided", None, None, None, None, None],
        "product_bullet_point": ["Fast charging\nDurable", None, None, None, None, None],
        "product_brand": ["Anker", "Apple", None, None, None, None],
        "product_color": ["Black", "White", None, None, None, None],
        "product_locale": ["us", "us", "us", "us", "es", "us"],
    }
    pq.write_table(pa.table(examples), folder / "shopping_queries_dataset_examples.parquet")
    pq.write_table(pa.table(products), folder / "shopping_queries_dataset_products.parquet")


def test_esci_official_parquet_pair(tmp_path):
    _write_esci_parquet(tmp_path)
    assert detect_format(tmp_path) == "esci"
    result = load_pairs(tmp_path)  # defaults: locale us, small_version
    got = {p.item.id: p for p in result.pairs}
    assert set(got) == {"A1", "A2", "A3", "A4"}
    assert {k: (p.label, p.raw_label) for k, p in got.items()} == {
        "A1": ("Exact", "E"),
        "A2": ("Partial", "S"),
        "A3": ("Partial", "C"),
        "A4": ("Irrelevant", "I"),
    }
    a1 = got["A1"].item.as_mapping()
    assert (
        a1["brand"] == "Anker" and a1["color"] == "Black" and a1["bullet_points"] == "Fast charging\nDurable"
    )
    assert got["A1"].query_id == "7"
    assert [p.item.id for p in load_pairs(tmp_path, split="test").pairs] == ["A1", "A2", "A4"]
    assert len(load_pairs(tmp_path, locale="es").pairs) == 1
    assert len(load_pairs(tmp_path, version="any").pairs) == 5


def test_esci_parquet_missing_column(tmp_path):
    import pyarrow.parquet as pq

    _write_esci_parquet(tmp_path)
    table = pq.read_table(tmp_path / "shopping_queries_dataset_examples.parquet").drop(["esci_label"])
    pq.write_table(table, tmp_path / "shopping_queries_dataset_examples.parquet")
    with pytest.raises(
        DataError, match=r"shopping_queries_dataset_examples\.parquet: missing column\(s\) esci_label"
    ):
        load_pairs(tmp_path)


def test_esci_flat_csv_and_judgments_tsv_from_bundle():
    bundled = Path(__file__).resolve().parents[2] / "distill" / "data" / "bundled"
    flat = load_pairs(bundled / "esci_us_sample_full.csv")
    assert flat.report.format == "esci-csv" and flat.report.pairs == 200 and flat.report.skipped_total == 0
    full = flat.pairs[0].item.as_mapping()
    assert full["brand"] == "Mama Koala" and full["description"] and full["bullet_points"]
    tsv = load_pairs(bundled / "esci_us_subset.tsv")
    assert tsv.report.format == "esci-tsv" and tsv.report.pairs == 877
    assert {p.raw_label for p in tsv.pairs} == {"E", "S", "C", "I"}


def _home_depot_csv(path: Path) -> None:
    text = (
        "id,product_uid,product_title,search_term,relevance\n"
        "2,100001,Simpson Strong-Tie 12-Gauge Angle,angle bracket,3.0\n"
        "3,100001,Simpson Strong-Tie 12-Gauge Angle,l bracket,2.5\n"
        '9,100002,"BEHR Premium 1-gal. Deck, 90° finish",deck over,2.33\n'
        "16,100005,Delta Vero 1-Handle Shower Faucet,rain shower head,1.5\n"
        "17,100005,Delta Vero 1-Handle Shower Faucet,shower only faucet,1.33\n"
        "18,100006,Whirlpool Microwave,,2.0\n"
        "20,100007,Café table,cafe table,high\n"
        "21,100008,Table, round,dining table,3.0\n"
    )
    path.write_bytes(text.encode("iso-8859-1"))


def test_home_depot_iso_8859_1_and_thresholds(tmp_path):
    path = tmp_path / "train.csv"
    _home_depot_csv(path)
    assert detect_format(path) == "home-depot"
    result = load_pairs(path)
    assert [(p.query, p.label) for p in result.pairs] == [
        ("angle bracket", "Exact"),
        ("l bracket", "Exact"),
        ("deck over", "Partial"),
        ("rain shower head", "Partial"),
        ("shower only faucet", "Irrelevant"),
    ]
    assert result.pairs[2].item.title == "BEHR Premium 1-gal. Deck, 90° finish"  # decoded as ISO-8859-1
    assert result.pairs[2].raw_label == pytest.approx(2.33)
    assert result.report.skipped == {"empty search_term": 1, "bad label": 1, "malformed row": 1}
    assert result.report.examples["malformed row"] == [
        f"{path}:9: 6 cells where the header has 5 (a stray delimiter or quote?)"
    ]
    assert "train.csv:8: relevance 'high' is not a number" in result.report.examples["bad label"][0]
    # The same query text gets the same id (so splits are by query).
    assert result.pairs[0].query_id != result.pairs[1].query_id


def test_crowdflower_median_relevance(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(
        "id,query,product_title,product_description,median_relevance,relevance_variance\n"
        '1,led lights,LED string lights,"Warm, 10 m",4,0.0\n'
        "2,led lights,Candle,,3,0.471\n"
        "3,led lights,Lamp shade,,2,0.0\n"
        "4,led lights,Garden hose,,1,0.0\n"
        "5,led lights,Sofa,,5,0.0\n",
        encoding="utf-8",
    )
    assert detect_format(path) == "crowdflower"
    result = load_pairs(path)
    assert [p.label for p in result.pairs] == ["Exact", "Partial", "Partial", "Irrelevant"]
    assert result.pairs[0].item.as_mapping()["description"] == "Warm, 10 m"
    assert len({p.query_id for p in result.pairs}) == 1
    assert result.report.skipped == {"bad label": 1}
    assert "train.csv:6" in result.report.examples["bad label"][0]


def test_generic_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    rows = [
        {
            "query": "red sofa",
            "item_id": "s1",
            "title": "Red sofa",
            "label": "exact",
            "brand": "Ikea",
            "attributes": {"material": "leather"},
        },
        {"query": "red sofa", "item_id": "s2", "title": "Blue sofa", "label": 1},
        {"query": "red sofa", "query_id": "q9", "item_id": "s3", "title": "Lamp", "label": "I"},
        {"query": "red sofa", "item_id": "s4", "title": "Sofa bed"},
        {"query": "red sofa", "item_id": "s5", "title": "Chair", "label": 7},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8")
    result = load_pairs(jsonl)
    assert [p.label for p in result.pairs] == ["Exact", "Partial", "Irrelevant", None]
    first = result.pairs[0]
    assert first.item.attributes == {"material": "leather"} and first.item.as_mapping()["brand"] == "Ikea"
    assert first.query_id == "red sofa" and result.pairs[2].query_id == "q9"
    assert result.report.skipped == {"bad label": 1, "invalid JSON": 1}
    assert "pairs.jsonl:5: label 7 is not a grade index 0–2" in result.report.examples["bad label"][0]

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "query,item_id,title,label,color,attributes\n"
        'red sofa,s1,Red sofa,Partial,red,"{""legs"": ""oak""}"\n',
        encoding="utf-8",
    )
    assert detect_format(csv_path) == "csv"
    (pair,) = load_pairs(csv_path).pairs
    assert pair.label == "Partial" and pair.item.as_mapping()["color"] == "red"
    assert pair.item.attributes == {"legs": "oak"}


def test_missing_column_names_column_and_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,product_uid,product_title,search_term\n1,2,x,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) relevance"):
        load_pairs(path, "home-depot")


def test_bad_label_strict_names_file_line_and_value(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("query,item_id,title,label\nsofa,1,Sofa,Exact\nsofa,2,Chair,Great\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.csv:3: label 'Great' is not a grade"):
        load_pairs(path, on_error="raise")


def test_broken_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(
        b"id,query,product_title,product_description,median_relevance,relevance_variance\n"
        b"1,sofa,Sofa,,4,0\n"
        b"2,caf\xe9 table,Table,,4,0\n"
    )
    with pytest.raises(DataError, match=r"train\.csv:3: not valid utf-8 \(byte \d+"):
        load_pairs(path)


def test_undetectable_format_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_pairs(path)


@pytest.mark.parametrize(
    ("name", "fmt", "pairs"), [("home-depot", "home-depot", 58262), ("crowdflower", "crowdflower", 7730)]
)
def test_kaggle_files_from_shared_folder(name, fmt, pairs, monkeypatch):
    monkeypatch.setenv("RELEVANCE_SHARED_DATA", str(SHARED))
    try:
        path = external_dataset_path(name)
    except DatasetError as exc:
        pytest.skip(f"Kaggle data is read from a path, never bundled, and is absent here: {exc}")
    result = load_pairs(path)
    assert result.report.format == fmt and result.report.pairs == pairs and result.report.skipped_total == 0


def test_data_inspect_command_reports_skips():
    from typer.testing import CliRunner

    from distill.cli import app

    result = CliRunner().invoke(app, ["data", "inspect", str(FIXTURES / "wands")])
    assert result.exit_code == 0, result.output
    assert "wands: 7 rows read, 4 pairs loaded, 3 skipped" in result.output
    assert "1 × bad label" in result.output
    strict = CliRunner().invoke(app, ["data", "inspect", str(FIXTURES / "wands"), "--strict"])
    assert strict.exit_code == 2 and "label.csv:6: product_id '9' is not in product.csv" in strict.output


def test_missing_external_dataset_says_where_and_why(tmp_path, monkeypatch):
    monkeypatch.setenv("RELEVANCE_SHARED_DATA", str(tmp_path))
    with pytest.raises(
        DatasetError, match=r"crowdflower/train\.csv: crowdflower data not found\. It is Kaggle"
    ):
        external_dataset_path("crowdflower")


def test_every_command_reads_named_datasets_through_one_resolver(tmp_path, monkeypatch):
    """A missing shared folder gives the same one line from train, annotate and eval."""
    from typer.testing import CliRunner

    from distill.cli import app

    monkeypatch.setenv("RELEVANCE_SHARED_DATA", str(tmp_path))
    runs = {
        "train": [
            "student",
            "train",
            "--name",
            "x",
            "--train",
            "home-depot:train",
            "--dev",
            "home-depot:dev",
        ],
        "annotate": ["teacher", "annotate", "--input", "home-depot:dev", "--out", str(tmp_path / "a.jsonl")],
        "eval": ["eval", "run", "--data", "home-depot:dev", "--system", "bm25", "--out", str(tmp_path / "e")],
    }
    for command, args in runs.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0, command
        assert "home-depot data not found" in result.output, (command, result.output)


def test_a_blank_title_is_skipped_with_its_reason_never_loaded(tmp_path):
    """The one item model (core/item.py) refuses a blank title, as /score does: loaders skip such rows
    and say so, instead of loading items the service would reject."""
    path = tmp_path / "hd.csv"
    path.write_text(
        "id,product_uid,product_title,search_term,relevance\n"
        "1,100,Oak table,oak table,3\n"
        "2,101,\xad\xad,oak table,2\n",
        encoding="iso-8859-1",
    )  # soft hyphens: nothing visible
    result = load_pairs(path, "home-depot")
    assert [p.item.id for p in result.pairs] == ["100"]
    assert result.report.skipped == {"empty product_title": 1}
    assert "hd.csv:3" in result.report.examples["empty product_title"][0]
