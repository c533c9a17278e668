//! Owner scans as a recording holds them: [`OwnerScan`] with its inodes
//! in order.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::{FdOwner, OwnerScan};

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An [`OwnerScan`], inodes in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Owners {
    /// Every (process, fd) holding each inode.
    pub owners: BTreeMap<u64, Vec<FdOwner>>,
    /// Processes whose descriptors could not be read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: usize,
}

impl From<&OwnerScan> for Owners {
    fn from(s: &OwnerScan) -> Self {
        Owners {
            owners: s.owners.iter().map(|(k, v)| (*k, v.clone())).collect(),
            unreadable: s.unreadable,
        }
    }
}

impl From<&Owners> for OwnerScan {
    fn from(o: &Owners) -> Self {
        OwnerScan {
            owners: o.owners.iter().map(|(k, v)| (*k, v.clone())).collect(),
            unreadable: o.unreadable,
        }
    }
}
