//! Places under two caps, one over everyone and one per client address: the bound every
//! resource a client can make the host hold has here (TCP connections on the signalling and API
//! ports, ICE-TCP streams, publishers, pulls). A share per address keeps one client from taking
//! every place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The two caps: places in all, places one address may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_address: usize,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every place is taken.
    Full,
    /// The address holds its share.
    AddressShare,
}

/// The places held, in all and per address (an address holding none has no entry, so the map
/// is bounded by the total cap).
#[derive(Debug, Default)]
pub struct Shares {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

impl Shares {
    /// Places held by `address`.
    pub fn held(&self, address: IpAddr) -> usize {
        self.by_address.get(&address).copied().unwrap_or(0)
    }

    /// Places held in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes a place for `address` if both caps allow it.
    pub fn take(&mut self, address: IpAddr, caps: Caps) -> Result<(), Refused> {
        if self.total >= caps.total {
            return Err(Refused::Full);
        }
        if self.held(address) >= caps.per_address {
            return Err(Refused::AddressShare);
        }
        self.total += 1;
        *self.by_address.entry(address).or_default() += 1;
        Ok(())
    }

    /// Gives back a place `address` held.
    pub fn give_back(&mut self, address: IpAddr) {
        let Some(n) = self.by_address.get_mut(&address) else { return };
        *n -= 1;
        self.total -= 1;
        if *n == 0 {
            self.by_address.remove(&address);
        }
    }

    /// Moves a place `from` holds to `to` if `to` is under its share (the total is unchanged);
    /// false if it stays (or `from` holds none).
    pub fn move_place(&mut self, from: IpAddr, to: IpAddr, per_address: usize) -> bool {
        if from == to {
            return true;
        }
        if self.held(from) == 0 || self.held(to) >= per_address {
            return false;
        }
        self.give_back(from);
        self.total += 1;
        *self.by_address.entry(to).or_default() += 1;
        true
    }
}

/// [`Shares`] behind a lock, handing out places that give themselves back when dropped: for
/// places held by tasks (a connection, a stream) rather than by an entry in a table.
#[derive(Debug, Default)]
pub struct Places(Mutex<Shares>);

/// A place taken from [`Places`], given back on drop.
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    address: IpAddr,
}

impl Places {
    fn shares(&self) -> std::sync::MutexGuard<'_, Shares> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `address`, if both caps allow it.
    pub fn take(self: &Arc<Self>, address: IpAddr, caps: Caps) -> Result<Place, Refused> {
        self.shares().take(address, caps)?;
        Ok(Place { places: self.clone(), address })
    }

    /// Places held in all.
    pub fn total(&self) -> usize {
        self.shares().total()
    }
}

impl Place {
    /// The address holding it.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// Moves the place to `address` if that address is under its share (the total is
    /// unchanged); `None` gives it back.
    pub fn move_to(mut self, address: IpAddr, per_address: usize) -> Option<Place> {
        let moved = self.places.shares().move_place(self.address, address, per_address);
        moved.then(|| {
            self.address = address;
            self
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.shares().give_back(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_takes_its_share_the_total_caps_everyone_and_places_come_back() {
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap());
        let caps = Caps { total: 3, per_address: 2 };
        let mut shares = Shares::default();
        assert_eq!((shares.take(a, caps), shares.take(a, caps)), (Ok(()), Ok(())));
        assert_eq!(shares.take(a, caps), Err(Refused::AddressShare));
        assert_eq!(shares.take(b, caps), Ok(()));
        assert_eq!(shares.take(c, caps), Err(Refused::Full));
        assert!(!shares.move_place(b, a, caps.per_address), "a holds its share");
        shares.give_back(a);
        assert!(shares.move_place(b, a, caps.per_address));
        assert_eq!((shares.held(a), shares.held(b), shares.total()), (2, 0, 2), "a move keeps the total");
        assert!(!shares.by_address.contains_key(&b), "an address holding nothing has no entry");
        shares.give_back(c);
        assert_eq!(shares.total(), 2, "giving back what was never held changes nothing");
        assert!(!shares.move_place(c, b, caps.per_address), "nor is a place moved that was never held");
        assert_eq!(shares.total(), 2);
    }
}
