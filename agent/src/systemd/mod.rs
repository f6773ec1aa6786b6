//! The only module that talks to systemd (over D-Bus with zbus): reload unit
//! files after writing a runtime drop-in, start a unit such as
//! `etcd.service`, reboot into a new slot, and read the boot timestamps
//! `systemd-analyze` prints.

use zbus::Connection;
use zbus::{OwnedObjectPath, OwnedVariant};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// The manager's boot timestamps, in microseconds of CLOCK_MONOTONIC (0
/// when unknown). As systemd keeps them, `firmware` and `loader` count back
/// from the kernel's start: the firmware started `firmware` µs before the
/// kernel, the boot loader `loader` µs before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManagerTimestamps {
    pub firmware: u64,
    pub loader: u64,
    /// systemd started in the initrd (0 without a systemd initrd).
    pub initrd: u64,
    /// systemd started on the real root.
    pub userspace: u64,
    /// The startup job queue emptied (0 while the boot is still running).
    pub finish: u64,
}

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

    /// `systemctl reboot`: starts `reboot.target` in mode
    /// `replace-irreversibly`, so that no later job cancels it.
    pub async fn reboot(&self) -> Result<(), Error> {
        self.conn
            .call_method(
                Some(DEST),
                PATH,
                Some(MANAGER),
                "StartUnit",
                &("reboot.target", "replace-irreversibly"),
            )
            .await
            .map_err(|source| Error::Call {
                method: "StartUnit",
                arg: "reboot.target".into(),
                source,
            })?;
        Ok(())
    }

    /// One `u64` property of an object of systemd's.
    async fn property_u64(&self, path: &str, interface: &str, name: &str) -> Result<u64, Error> {
        let call = |source| Error::Call {
            method: "Get",
            arg: format!("{interface}.{name}"),
            source,
        };
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path,
                Some(PROPERTIES),
                "Get",
                &(interface, name),
            )
            .await
            .map_err(call)?;
        let value = reply.body().deserialize::<OwnedVariant>().map_err(call)?;
        u64::try_from(value).map_err(call)
    }

    /// When `unit` last became active (`ActiveEnterTimestampMonotonic`, µs
    /// of CLOCK_MONOTONIC); `None` while it has not been.
    pub async fn active_enter_monotonic(&self, unit: &str) -> Result<Option<u64>, Error> {
        let reply = self
            .conn
            .call_method(Some(DEST), PATH, Some(MANAGER), "LoadUnit", &(unit,))
            .await
            .map_err(|source| Error::Call {
                method: "LoadUnit",
                arg: unit.to_string(),
                source,
            })?;
        let path = reply
            .body()
            .deserialize::<OwnedObjectPath>()
            .map_err(|source| Error::Call {
                method: "LoadUnit",
                arg: unit.to_string(),
                source,
            })?;
        let at = self
            .property_u64(path.as_str(), UNIT, "ActiveEnterTimestampMonotonic")
            .await?;
        Ok((at > 0).then_some(at))
    }

    /// The manager's boot timestamps (what `systemd-analyze` reads).
    pub async fn manager_timestamps(&self) -> Result<ManagerTimestamps, Error> {
        let get = |name| self.property_u64(PATH, MANAGER, name);
        Ok(ManagerTimestamps {
            firmware: get("FirmwareTimestampMonotonic").await?,
            loader: get("LoaderTimestampMonotonic").await?,
            initrd: get("InitRDTimestampMonotonic").await?,
            userspace: get("UserspaceTimestampMonotonic").await?,
            finish: get("FinishTimestampMonotonic").await?,
        })
    }
}

/// Connects to the system bus and asks systemd-networkd to reload.
pub async fn reload_networkd() -> Result<(), Error> {
    Systemd::system().await?.reload_networkd().await
}
