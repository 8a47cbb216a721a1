//! Generation UUIDs as DRBD 8.4 maintains them (`drbd_uuid_new_current`).
//!
//! Bit 0 of the current UUID records the role (1 while Primary) and is masked
//! out of every comparison, so promotion alone never looks like new data.

use crate::meta::GenerationUuids;

/// Start a new data generation: the old current UUID becomes the bitmap UUID
/// (the point from which the bitmap tracks changes) and `fresh` becomes current.
pub fn new_current(uuids: &mut GenerationUuids, fresh: u64) {
    let primary = uuids.current & 1;
    if uuids.bitmap == 0 {
        uuids.bitmap = uuids.current & !1;
    }
    uuids.current = (fresh & !1) | primary;
}

pub fn set_role_bit(uuids: &mut GenerationUuids, primary: bool) {
    uuids.current = (uuids.current & !1) | u64::from(primary);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_while_disconnected_keeps_the_old_generation_as_bitmap_uuid() {
        let mut u = GenerationUuids {
            current: 0x1000,
            bitmap: 0,
            history: [0, 0],
        };
        new_current(&mut u, 0xabcd_ef01);
        set_role_bit(&mut u, true);
        assert_eq!(u.bitmap, 0x1000);
        assert_eq!(u.current, 0xabcd_ef01);
        set_role_bit(&mut u, false);
        assert_eq!(u.current, 0xabcd_ef00);
    }
}
