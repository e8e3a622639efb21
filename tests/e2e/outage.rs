//! PostgreSQL unreachable under load, through a proxy that cuts every connection: the
//! scenario of `ledger_outage`, without stopping the server other tests use.

use crate::helpers::*;
use crate::ledger_outage::{LEDGER_TIMEOUTS, pause_and_resume};
use crate::proxy::CuttableProxy;

#[tokio::test]
async fn ledger_outage_pauses_and_resumes() {
    let fixture = Fixture::new("ledger-outage").await;
    create_ledger_database(&fixture.topology.env()).await;
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let ledger_url = format!(
        "postgres://postgres@{}/{}",
        proxy.address, fixture.topology.database
    );
    let mut settings = LEDGER_TIMEOUTS.to_vec();
    settings.push(("HERALD__LEDGER__URL", &ledger_url));
    let herald = fixture.start(&settings).await;

    pause_and_resume(&fixture, herald, || proxy.cut(), || proxy.restore()).await;
    drop(proxy);
    fixture.topology.delete().await;
}
