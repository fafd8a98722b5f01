//! Imports through `ProductService` on both databases, with a real Redis.

use api_server::import::import_file;
use integration_tests::fixtures::{Fixture, first_page};

use crate::helpers::*;

integration_tests::on_both_databases!("import_":
    a_csv_import_creates_updates_and_counts_unchanged_rows,
    a_jsonl_import_keeps_absent_fields_and_sets_given_ones,
    bad_csv_rows_are_reported_by_line_and_field_and_valid_rows_are_applied,
    bad_jsonl_lines_are_reported_by_line_and_field_and_valid_lines_are_applied,
    an_unknown_csv_column_is_an_error_naming_it_and_nothing_is_written,
    a_dry_run_reports_what_the_import_would_do_and_writes_nothing,
    repeated_skus_in_one_batch_apply_in_file_order,
    imports_span_batches_and_a_reimport_changes_nothing,
    a_cached_product_and_list_page_show_the_import_at_once,
);

async fn a_csv_import_creates_updates_and_counts_unchanged_rows(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    // Columns in any order.
    let first = files.write(
        "first.csv",
        "name,sku,price_cents,stock,category,description\n\
         Keyboard,KB-1,8999,12,keyboards,Clicky\n\
         Mouse,MS-1,1999,5,mice,\n\
         Cable,CB-1,499,100,,\n",
    );

    let report = import(&f.service, &first).await;

    assert_eq!(counts(&report), (3, 0, 0, 0), "{report}");
    let kb = stored(&db, "KB-1").await.expect("KB-1 created");
    assert_eq!(
        (
            kb.name.as_str(),
            kb.description.as_str(),
            kb.price_cents,
            kb.stock
        ),
        ("Keyboard", "Clicky", 8999, 12)
    );
    assert_eq!((kb.category.as_str(), kb.version), ("keyboards", 1));
    let cb = stored(&db, "CB-1").await.expect("CB-1 created");
    assert_eq!(
        (cb.description.as_str(), cb.category.as_str()),
        ("", ""),
        "description and category default to empty"
    );

    // A changed price with empty cells, an identical row, a new product.
    let second = files.csv(
        "second.csv",
        "KB-1,,,7999,,\n\
         MS-1,Mouse,,1999,5,mice\n\
         PD-1,Pad,,999,3,\n",
    );

    let report = import(&f.service, &second).await;

    assert_eq!(counts(&report), (1, 1, 1, 0), "{report}");
    assert_eq!(
        report.summary(),
        "created 1, updated 1, unchanged 1, failed 0"
    );
    let kb2 = stored(&db, "KB-1").await.expect("KB-1");
    assert_eq!(
        kb2,
        Stored {
            price_cents: 7999,
            version: 2,
            ..kb
        },
        "empty cells keep their values; the version moves on once"
    );
    assert_eq!(stored(&db, "MS-1").await.expect("MS-1").version, 1);
    assert!(stored(&db, "PD-1").await.is_some());
    assert_eq!(count_rows(&db, "product").await, 4);
}

async fn a_jsonl_import_keeps_absent_fields_and_sets_given_ones(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let first = files.write(
        "products.jsonl",
        concat!(
            r#"{"sku":"J-1","name":"One","description":"First","price_cents":100,"stock":1,"category":"c"}"#,
            "\n",
            "\n",
            r#"{"sku":"J-2","name":"Two","price_cents":200,"stock":2}"#,
            "\n",
        ),
    );
    assert_eq!(counts(&import(&f.service, &first).await), (2, 0, 0, 0));

    let second = files.write(
        "changes.jsonl",
        concat!(
            // absent keys and null keep; "" is a value
            r#"{"sku":"J-1","name":null,"description":"","stock":5}"#,
            "\n",
            r#"{"sku":"J-2","price_cents":200}"#,
            "\n",
            r#"{"sku":"J-3","name":"Three","price_cents":300,"stock":3,"category":"new"}"#,
        ),
    );

    let report = import(&f.service, &second).await;

    assert_eq!(counts(&report), (1, 1, 1, 0), "{report}");
    let one = stored(&db, "J-1").await.expect("J-1");
    assert_eq!(
        (one.name.as_str(), one.description.as_str(), one.price_cents),
        ("One", "", 100)
    );
    assert_eq!((one.stock, one.category.as_str(), one.version), (5, "c", 2));
    assert_eq!(stored(&db, "J-2").await.expect("J-2").version, 1);
    let three = stored(&db, "J-3")
        .await
        .expect("J-3, on a last line without a newline");
    assert_eq!(three.category, "new");
}

async fn bad_csv_rows_are_reported_by_line_and_field_and_valid_rows_are_applied(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    // Line numbers are physical: the quoted cell of the first row spans lines 2-3.
    let path = files.csv(
        "bad.csv",
        "KB-1,Keyboard,\"two\nlines\",8999,12,keyboards\n\
         bad sku,Thing,,1,1,\n\
         NN-1,,,100,1,\n\
         NEG-1,Cable,,-5,1,\n\
         TXT-1,Pad,,12.50,1,\n\
         MS-1,Mouse,,1999,5,mice\n\
         BIG-1,Big,,1,1000000001,\n\
         SHORT-1,Short,,1\n\
         KB-1,,,7999,,\n",
    );

    let report = import(&f.service, &path).await;

    assert_eq!(
        messages(&report),
        [
            "line 4: sku: may only contain A-Z, a-z, 0-9, '-', '_' and '.'",
            "line 5: name: is required to create a product",
            "line 6: price_cents: must be between 0 and 1000000000000",
            "line 7: price_cents: must be an integer",
            "line 9: stock: must be between 0 and 1000000000",
            "line 10: row: has 4 fields, the header has 6",
        ]
    );
    assert_eq!(counts(&report), (2, 1, 0, 6), "{report}");
    let kb = stored(&db, "KB-1").await.expect("KB-1 applied");
    assert_eq!(
        (kb.description.as_str(), kb.price_cents, kb.version),
        ("two\nlines", 7999, 2)
    );
    assert!(stored(&db, "MS-1").await.is_some(), "MS-1 applied");
    for skipped in ["NN-1", "NEG-1", "TXT-1", "BIG-1", "SHORT-1"] {
        assert_eq!(stored(&db, skipped).await, None, "{skipped} was skipped");
    }
}

async fn bad_jsonl_lines_are_reported_by_line_and_field_and_valid_lines_are_applied(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.write(
        "bad.jsonl",
        concat!(
            r#"{"sku":"J-1","name":"One","price_cents":100,"stock":1}"#,
            "\n",
            r#"{"sku":"J-2","name":"Two","price_cents":100,"stock":1,"colour":"red"}"#,
            "\n",
            "   \n",
            r#"{"sku":"J-3","name":"Three","price_cents":"100","stock":1}"#,
            "\n",
            r#"{"sku":"J-4","#,
            "\n",
            r#"{"sku":"J-5","price_cents":100,"stock":1}"#,
            "\n",
            r#"["J-6"]"#,
            "\n",
            r#"{"sku":"J-1","stock":7}"#,
            "\n",
        ),
    );

    let report = import(&f.service, &path).await;

    let found = messages(&report);
    let expected_starts = [
        "line 2: colour: unknown field",
        "line 4: price_cents: must be an integer",
        "line 5: json: not valid JSON",
        "line 6: name: is required to create a product",
        "line 7: json: must be a JSON object",
    ];
    assert_eq!(found.len(), expected_starts.len(), "{found:#?}");
    for (message, start) in found.iter().zip(expected_starts) {
        assert!(
            message.starts_with(start),
            "{message:?} should start with {start:?}"
        );
    }
    assert_eq!(counts(&report), (1, 1, 0, 5), "{report}");
    assert_eq!(stored(&db, "J-1").await.expect("J-1").stock, 7);
    assert_eq!(
        stored(&db, "J-2").await,
        None,
        "an unknown key fails its line"
    );
}

async fn an_unknown_csv_column_is_an_error_naming_it_and_nothing_is_written(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.write(
        "unknown.csv",
        "sku,name,colour,price_cents,stock,weight\n\
         KB-1,Keyboard,red,8999,12,3kg\n",
    );

    let error = import_file(&f.service, &path, &quiet(false))
        .await
        .expect_err("unknown columns are an error");

    let message = format!("{error:#}");
    assert!(
        message.contains("\"colour\"") && message.contains("\"weight\""),
        "{message}"
    );
    assert_eq!(count_rows(&db, "product").await, 0, "nothing was written");
    assert_eq!(count_rows(&db, "cache_outbox").await, 0);
}

async fn a_dry_run_reports_what_the_import_would_do_and_writes_nothing(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    f.create("OLD-1", 100).await;
    f.service.relay(100).drain().await.expect("drain");
    let generation = f.list_generation().await;
    // 1 100 rows in three batches; D-0001, created in the first, changes in the third.
    let mut csv = format!("{HEADER}\n");
    for n in 1..=1000 {
        csv.push_str(&format!("D-{n:04},Product {n},,{n},1,dry\n"));
    }
    csv.push_str("OLD-1,,,250,,\n");
    csv.push_str("OLD-1,,,250,,\n");
    csv.push_str("D-0001,,,5,,\n");
    csv.push_str("BAD-1,,,1,1,\n");
    for n in 1001..=1096 {
        csv.push_str(&format!("D-{n:04},Product {n},,{n},1,dry\n"));
    }
    let path = files.write("dry.csv", &csv);

    let dry = import_file(&f.service, &path, &quiet(true))
        .await
        .expect("the dry run runs");

    assert_eq!(counts(&dry), (1096, 2, 1, 1), "{dry}");
    assert_eq!(
        messages(&dry),
        ["line 1005: name: is required to create a product"]
    );
    assert_eq!(count_rows(&db, "product").await, 1, "nothing was written");
    assert_eq!(count_rows(&db, "cache_outbox").await, 0, "nothing is owed");
    assert_eq!(stored(&db, "OLD-1").await.expect("OLD-1").version, 1);
    assert_eq!(
        f.list_generation().await,
        generation,
        "nothing was invalidated"
    );

    let real = import(&f.service, &path).await;

    assert_eq!(real, dry, "the real import does what the dry run said");
    assert_eq!(count_rows(&db, "product").await, 1097);
    let d1 = stored(&db, "D-0001").await.expect("D-0001");
    assert_eq!((d1.price_cents, d1.version), (5, 2));
}

async fn repeated_skus_in_one_batch_apply_in_file_order(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let path = files.csv(
        "repeated.csv",
        "A-1,,,100,1,\n\
         A-1,First,,100,1,\n\
         A-1,,,200,,\n\
         A-1,,,200,,\n\
         A-1,Renamed,,,,\n",
    );

    let report = import(&f.service, &path).await;

    // The first row cannot create A-1 (no name); the second can; the rest update it.
    assert_eq!(counts(&report), (1, 2, 1, 1), "{report}");
    let a = stored(&db, "A-1").await.expect("A-1");
    assert_eq!(
        (a.name.as_str(), a.price_cents, a.version),
        ("Renamed", 200, 3),
        "the version counts every change, as one-by-one updates would"
    );
    assert_eq!(count_rows(&db, "product").await, 1);
}

async fn imports_span_batches_and_a_reimport_changes_nothing(f: Fixture) {
    let files = Files::new();
    let db = database(&f).await;
    let rows = 1_234;
    let file = |name: &str, price: &dyn Fn(i64) -> i64| {
        let mut csv = format!("{HEADER}\n");
        for n in 1..=rows {
            csv.push_str(&format!("S-{n:05},Product {n},,{},{n},bulk\n", price(n)));
        }
        files.write(name, &csv)
    };
    let initial = file("initial.csv", &|n| n);
    let half = file("half.csv", &|n| if n % 2 == 0 { n + 1 } else { n });

    assert_eq!(counts(&import(&f.service, &initial).await), (1234, 0, 0, 0));
    assert_eq!(counts(&import(&f.service, &initial).await), (0, 0, 1234, 0));
    assert_eq!(counts(&import(&f.service, &half).await), (0, 617, 617, 0));

    assert_eq!(count_rows(&db, "product").await, 1234);
    let first = stored(&db, "S-00001").await.expect("first");
    let second = stored(&db, "S-00002").await.expect("second");
    let last = stored(&db, "S-01234").await.expect("last");
    assert_eq!((first.price_cents, first.version), (1, 1));
    assert_eq!((second.price_cents, second.version), (3, 2));
    assert_eq!((last.price_cents, last.version), (1235, 2));
    assert!(
        first.id < second.id && second.id < last.id,
        "ids follow the file"
    );
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "what each batch owed was applied, and its outbox rows deleted"
    );
}

async fn a_cached_product_and_list_page_show_the_import_at_once(f: Fixture) {
    let files = Files::new();
    let kb = f.create("KB-1", 100).await;
    assert_eq!(f.read(kb.id).await.price_cents, 100);
    let page = f.service.find_in_page(&first_page()).await.expect("list");
    assert_eq!(page.total, 1);
    assert!(f.is_cached(kb.id).await, "the product is cached");
    let generation = f.list_generation().await;
    // The import runs in "another process": its own cache handle, same Redis.
    let importer = f.peer(&f.redis_url).await;
    let path = files.csv("update.csv", "KB-1,,,250,,\nKB-2,Second,,300,1,cat\n");

    let report = import(&importer, &path).await;

    assert_eq!(counts(&report), (1, 1, 0, 0), "{report}");
    assert_ne!(
        f.list_generation().await,
        generation,
        "the list group moved on"
    );
    let read = f.read(kb.id).await;
    assert_eq!(
        (read.price_cents, read.version),
        (250, 2),
        "the cached product shows the import at once"
    );
    let page = f.service.find_in_page(&first_page()).await.expect("list");
    let listed: Vec<(&str, i64)> = page
        .items
        .iter()
        .map(|p| (p.sku.as_str(), p.price_cents))
        .collect();
    assert_eq!(
        listed,
        [("KB-1", 250), ("KB-2", 300)],
        "the cached page shows the import at once"
    );
    let db = database(&f).await;
    assert_eq!(
        count_rows(&db, "cache_outbox").await,
        0,
        "the import applied what was owed at its end (KB-1's create too)"
    );
}
