//! `keelson bench …`: load generators that print their figures.

mod fsync;
mod store;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Load an etcd v3 endpoint (keelson or etcd) with puts or ranges.
    Store(store::StoreBenchArgs),
}

pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Store(a) => store::run(a).await,
    }
}
