//! `anygate demo`: the gateway and an echo upstream from an embedded config, no files needed.

use crate::server::{self, Flags};
use std::path::Path;

const DEMO_YAML: &str = r#"
env: demo-1a2b3c
listen:
  http: "@LISTEN@"
  admin: "@ADMIN@"
server: { threads: 1, grace_period: 1s, graceful_shutdown_timeout: 1s }
domains:
  - name: api.example.com
instances:
  - id: lhins-demo
    address: "@ECHO@"
    upstream_type: Lighthouse
routes:
  - { domain: default, path: /api, instance: lhins-demo }
  - { domain: api.example.com, path: /, instance: lhins-demo, passthrough: true }
"#;

/// The demo's config for the given addresses.
pub fn config(listen: &str, echo: &str, admin: &str) -> String {
    DEMO_YAML
        .replace("@LISTEN@", listen)
        .replace("@ECHO@", echo)
        .replace("@ADMIN@", admin)
}

/// The curl lines the demo prints.
pub fn curl_lines(listen: &str, admin: &str) -> String {
    format!(
        r#"anygate demo is running: gateway on http://{listen}, echo upstream behind it,
admin listener on http://{admin}.
Try:

# 1. An SDK call, as wx.cloud.callContainer sends it (X-WX-SERVICE + X-Vm-Service):
curl -i -H 'X-WX-SERVICE: tcbanyservice' -H 'X-Vm-Service: lhins-demo' 'http://{listen}/api/user/info'

# 2. HTTP access on the default domain: trigger path /api is stripped, the query kept:
curl -i -H 'Host: demo-1a2b3c.service.tcloudbase.com' 'http://{listen}/api/user/info?id=42'

# 3. An unknown instance: 404 SERVICE_NOT_FOUND with a JSON body:
curl -i -H 'X-WX-SERVICE: tcbanyservice' -H 'X-Vm-Service: lhins-nope' 'http://{listen}/'

# 4. The admin listener: readiness, then the metrics of the calls above:
curl -i 'http://{admin}/readyz'
curl -s 'http://{admin}/metrics'

Every answer carries X-Cloudbase-Request-Id, -Upstream-Status-Code, -Upstream-Timecost and
-Upstream-Type. Stop with Ctrl-C.
"#
    )
}

pub fn run(listen: &str, echo: &str, admin: &str) -> i32 {
    let yaml = config(listen, echo, admin);
    let telemetry = match server::new_telemetry() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let snap = match server::snapshot_from_str(Path::new("<demo>"), &yaml, 1, &telemetry) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let store = std::sync::Arc::new(crate::snapshot::Store::new(snap));
    let srv = server::build(store, Flags::default(), Some(echo), None);
    println!("{}", curl_lines(listen, admin));
    srv.run_forever()
}
