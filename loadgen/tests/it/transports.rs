//! The load generator's transports are the server's, in the same order.

#[test]
fn the_loadgen_and_the_server_name_the_same_transports() {
    let ours: Vec<String> = loadgen::transport::TRANSPORTS
        .iter()
        .map(|t| t.label())
        .collect();
    let theirs: Vec<String> = lab::transport::NAMES
        .iter()
        .map(|n| n.replace('-', "_"))
        .collect();
    assert_eq!(ours, theirs);
}
