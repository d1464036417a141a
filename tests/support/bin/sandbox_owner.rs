//! A stand-in for a test binary that crashes: starts a small sandbox cluster, prints its
//! data directory and every pid, then aborts without any clean-up of its own. The
//! cleanup test checks that the reaper stops everything anyway.

fn main() {
    let cluster = strata_sandbox::Cluster::builder()
        .shards(1)
        .replicas(1)
        .redis_masters(0)
        .nodes(0)
        .start()
        .expect("start a small cluster");
    println!("dir {}", cluster.spec.data_dir.display());
    for pg in &cluster.postgres {
        println!("pid {}", pg.postmaster_pid().expect("postgres runs"));
    }
    std::process::abort();
}
