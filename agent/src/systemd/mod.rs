//! The only module that talks to systemd (over D-Bus with zbus): reload unit
//! files after writing a runtime drop-in, and start a unit such as
//! `etcd.service`.

use zbus::Connection;
use zbus::OwnedObjectPath;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// What can go wrong talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the D-Bus system bus (is systemd PID 1?): {0}")]
    Connect(#[source] zbus::Error),
    #[error("systemd {method} {arg}: {source}")]
    Call {
        method: &'static str,
        arg: String,
        #[source]
        source: zbus::Error,
    },
}

/// A client of systemd's manager object.
pub struct Systemd {
    conn: Connection,
}

impl Systemd {
    /// Connects to the system bus.
    pub async fn system() -> Result<Systemd, Error> {
        Ok(Systemd {
            conn: Connection::system().await.map_err(Error::Connect)?,
        })
    }

    /// Connects to the bus at `address` (tests use a private bus).
    pub async fn at(address: &str) -> Result<Systemd, Error> {
        let conn = zbus::conn::Builder::address(address)
            .build()
            .await
            .map_err(Error::Connect)?;
        Ok(Systemd { conn })
    }

    /// `networkctl reload`: systemd-networkd rereads its `.network` files
    /// and reconfigures the links they match.
    pub async fn reload_networkd(&self) -> Result<(), Error> {
        self.conn
            .call_method(
                Some("org.freedesktop.network1"),
                "/org/freedesktop/network1",
                Some("org.freedesktop.network1.Manager"),
                "Reload",
                &(),
            )
            .await
            .map_err(|source| Error::Call {
                method: "network1.Reload",
                arg: String::new(),
                source,
            })?;
        Ok(())
    }

    /// `systemctl daemon-reload`.
    pub async fn reload(&self) -> Result<(), Error> {
        self.conn
            .call_method(Some(DEST), PATH, Some(MANAGER), "Reload", &())
            .await
            .map_err(|source| Error::Call {
                method: "Reload",
                arg: String::new(),
                source,
            })?;
        Ok(())
    }

    /// `systemctl start UNIT` (mode `replace`); returns the job's path.
    pub async fn start_unit(&self, unit: &str) -> Result<OwnedObjectPath, Error> {
        let call = |source| Error::Call {
            method: "StartUnit",
            arg: unit.to_string(),
            source,
        };
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                PATH,
                Some(MANAGER),
                "StartUnit",
                &(unit, "replace"),
            )
            .await
            .map_err(call)?;
        reply.body().deserialize::<OwnedObjectPath>().map_err(call)
    }
}

/// Connects to the system bus and asks systemd-networkd to reload.
pub async fn reload_networkd() -> Result<(), Error> {
    Systemd::system().await?.reload_networkd().await
}
