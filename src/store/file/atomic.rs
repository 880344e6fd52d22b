//! File writes that never leave a half-written file behind, and reads that never block.
//!
//! History, the generated secret and other state are rewritten whole: the new content goes to a temporary
//! file beside the target, is flushed to disk, and then renamed over it, so a crash leaves either the old
//! file or the new one, never a mix. The temporary file gets a random name and is created exclusively,
//! owner-only, never through a symlink, so nobody who can write to the directory can make authrun write
//! elsewhere. A state file is read only when it is a regular file: a named pipe planted in its place would
//! otherwise block start-up forever. Also what every state file needs besides: creating its owner-only
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::store::{StateFile, StoreError};

/// Why a state file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The path names a named pipe, a directory, a device or a socket (the words say which).
    NotRegular(&'static str),
    Io(io::Error),
}

impl ReadError {
    /// The error in the words of `kind`, the state file at `path`.
    pub fn about(self, kind: StateFile, path: &Path) -> StoreError {
        match self {
            Self::NotRegular(found) => StoreError::NotAFile {
                kind,
                path: path.to_path_buf(),
                found,
            },
            Self::Io(source) => kind.io(path, "read", source),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// The text of `path`, or `None` when it does not exist or holds only white space (a new state file).
pub fn read_if_present(path: &Path) -> Result<Option<String>, ReadError> {
    Ok(read_regular(path)?.filter(|text| !text.trim().is_empty()))
}

/// The text of `path`, or `None` when it does not exist. Anything but a regular file (a symlink to one is
/// fine) is refused without being opened for long: the type is checked first, and the file is opened
/// non-blocking and checked again, so a named pipe swapped in between cannot block either.
pub fn read_regular(path: &Path) -> Result<Option<String>, ReadError> {
    match fs::metadata(path) {
        Ok(metadata) => regular(&metadata)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    regular(&file.metadata()?)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Opens `path` for appending, creating it owner-only: a regular file, or a device such as `/dev/null`.
/// A named pipe, a directory or a socket is refused, without blocking on the pipe.
pub fn open_append(path: &Path) -> io::Result<File> {
    let refuse = |found: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {found}, not a regular file"),
        )
    };
    let check = |metadata: &fs::Metadata| match kind_of(metadata) {
        Some(found) if !metadata.file_type().is_char_device() => Err(refuse(found)),
        _ => Ok(()),
    };
    match fs::metadata(path) {
        Ok(metadata) => check(&metadata)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            // Opening a named pipe without a reader, non-blocking.
            Some(nix::libc::ENXIO) => refuse("a named pipe (FIFO)"),
            _ => error,
        })?;
    check(&file.metadata()?)?;
    Ok(file)
}

/// `Ok` for a regular file; for anything else, what it is.
fn regular(metadata: &fs::Metadata) -> Result<(), ReadError> {
    match kind_of(metadata) {
        None => Ok(()),
        Some(found) => Err(ReadError::NotRegular(found)),
    }
}

/// What a path that is not a regular file names, as an error says it; `None` for a regular file.
fn kind_of(metadata: &fs::Metadata) -> Option<&'static str> {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Some("a device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("an unknown kind of file")
    }
}

/// Creates `dir` and its missing parents, owner-only (0700). An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates the directory `path` lives in, owner-only, when it has one.
pub fn create_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => create_private_dir(dir),
        _ => Ok(()),
    }
}

/// Replaces `path` with `contents` atomically; the new file is owner-only (0600), whatever the old one was.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (mut file, temp) = create_temp(path)?;
    let result = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&parent_dir(path))
}

/// Creates `path` with private permissions (0600) and `contents`, failing if it exists already.
pub fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = create_exclusive(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    sync_dir(&parent_dir(path))
}

/// A new temporary file beside `path` (so the rename stays on one filesystem), under a random name.
fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    let name = path.file_name().unwrap_or_default();
    let mut tries = 0;
    loop {
        let mut temp_name = name.to_os_string();
        temp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
        let temp = path.with_file_name(temp_name);
        match create_exclusive(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(error) => return Err(error),
        }
    }
}

/// Creates `path`, owner-only, failing if anything (a symlink too, dangling or not) is there already.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename durable: the directory entry itself must reach the disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old content that is long").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_target_as_it_was_and_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A directory that is not empty cannot be replaced by a file: the rename fails.
        let path = dir.path().join("state.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"old").unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_are_owner_only_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create_private(&path, b"one").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(create_private(&path, b"two").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }

    #[test]
    fn a_symlink_planted_where_a_temporary_file_goes_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("history.json");
        // The name a temporary file used to get, predictable from the process id.
        let planted = dir
            .path()
            .join(format!("history.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&path, b"[]\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&path).unwrap(), b"[]\n");
        assert!(fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_temporary_file_is_created_exclusively_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_exclusive(&link).is_err());
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(create_exclusive(&dangling).is_err());
        assert!(!dir.path().join("nothing").exists());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn replaced_files_are_owner_only_whatever_they_were() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        fs::write(&path, b"[]").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"[]\n").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn a_state_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let found = |path: &Path| match read_if_present(path) {
            Err(ReadError::NotRegular(found)) => found,
            other => panic!("{other:?}"),
        };
        assert!(found(&fifo).contains("named pipe"));
        assert!(found(dir.path()).contains("directory"));
        assert!(found(Path::new("/dev/null")).contains("device"));
        let error = open_append(&fifo).unwrap_err();
        assert!(error.to_string().contains("named pipe"), "{error}");
        assert!(open_append(Path::new("/dev/null")).is_ok());
        assert_eq!(read_if_present(&dir.path().join("missing")).unwrap(), None);
    }
}
