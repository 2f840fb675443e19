//! Hand-made tar streams for attack tests: names, link targets and PAX
//! records are written byte for byte, with none of the checks a normal
//! tar writer makes.
pub struct RawTar(tar::Builder<Vec<u8>>);

/// Kinds of entry a hostile layer can hold.
pub enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Hardlink(&'a str),
    CharDevice(u32, u32),
    Fifo,
}

impl Default for RawTar {
    fn default() -> Self {
        RawTar(tar::Builder::new(Vec::new()))
    }
}

impl RawTar {
    /// Adds an entry whose name is stored as given (up to 100 bytes).
    pub fn entry(&mut self, name: &str, kind: Kind<'_>, mode: u32) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        raw_name(&mut h, name);
        h.set_mode(mode);
        h.set_mtime(0);
        let data: &[u8] = match kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                raw_link(&mut h, t);
                &[]
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                raw_link(&mut h, t);
                &[]
            }
            Kind::CharDevice(maj, min) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(maj).unwrap();
                h.set_device_minor(min).unwrap();
                &[]
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    /// A regular file whose header claims `size` bytes but carries `data`.
    pub fn lying_file(&mut self, name: &str, size: u64, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        raw_name(&mut h, name);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        self.0.get_mut().extend_from_slice(h.as_bytes());
        self.0.get_mut().extend_from_slice(data);
        self
    }

    /// A PAX extended header whose records apply to the next entry.
    pub fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rec = format!(" {k}={v}\n");
            let mut len = rec.len() + 1;
            while format!("{len}{rec}").len() != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len}{rec}").as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        raw_name(&mut h, "PaxHeader");
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.0.append(&h, &body[..]).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..target.len()].copy_from_slice(target.as_bytes());
}
