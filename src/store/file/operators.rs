//! The operators in `<state_dir>/operators.json` (owner-only, written atomically), shared with the
//! command line (`authrun operator ...`) through [`SharedJson`]: a file that cannot be parsed stops
//! start-up and is never overwritten.

use std::path::Path;

use crate::model::operator::Operators;
use crate::store::file::shared::{self, SharedJson};
use crate::store::{OperatorStore, StateFile, StoreError};

/// The operators file, in error messages.
pub const OPERATORS_FILE: StateFile = StateFile {
    what: "operators file",
    repair: "repair the file from a backup; deleting it removes every operator",
};

/// The operators of a running server, mirrored in memory.
#[derive(Debug)]
pub struct FileOperators(SharedJson<Operators>);

impl FileOperators {
    /// Reads the file (a missing one: no operators yet).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        SharedJson::open(OPERATORS_FILE, path).map(Self)
    }
}

#[async_trait::async_trait]
impl OperatorStore for FileOperators {
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s Operators) + Send)) {
        self.0.reload_if_marked();
        look(&self.0.lock());
    }

    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut Operators) -> bool + Send),
    ) -> Result<(), StoreError> {
        self.0.transact_durably(change).await
    }
}

/// Changes the file from the command line, telling a running server to read it again.
pub fn edit<R>(
    path: &Path,
    change: impl FnOnce(&mut Operators) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    shared::edit(OPERATORS_FILE, path, change)
}

/// The operators as the file holds them now.
pub fn read(path: &Path) -> Result<Operators, StoreError> {
    shared::read(OPERATORS_FILE, path)
}
