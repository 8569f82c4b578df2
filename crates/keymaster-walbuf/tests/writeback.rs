//! `writeback::write_out_paced`: every slice of a file, the last one partial, is written out
//! without changing what the file holds; an empty file is nothing to do.

use std::io::{Read, Write};

use keymaster_walbuf::writeback::write_out_paced;

#[test]
fn a_file_is_written_out_slice_by_slice_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let data: Vec<u8> = (0..(3 << 20) + 12_345)
        .map(|i: u32| (i * 7) as u8)
        .collect();
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all(&data).unwrap();
    write_out_paced(&file, 1 << 20).unwrap();
    // A slice smaller than a page is raised to one; a slice larger than the file is one step.
    write_out_paced(&file, 1).unwrap();
    write_out_paced(&file, 1 << 30).unwrap();
    file.sync_data().unwrap();
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the file changed");

    let empty = std::fs::File::create(dir.path().join("empty")).unwrap();
    write_out_paced(&empty, 1 << 20).unwrap();
}
