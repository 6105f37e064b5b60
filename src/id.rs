//! How errors and reports name a stage.

use std::fmt;
use std::sync::Arc;

/// A stage's position and name, as errors and reports name it: `stage 2 (update)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageId {
    /// The stage's position in the pipeline, from 0.
    index: usize,
    /// The name given when the stage was added.
    name: Arc<str>,
}

impl StageId {
    pub(crate) fn new(index: usize, name: Arc<str>) -> Self {
        StageId { index, name }
    }

    /// The stage's position in the pipeline, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {} ({})", self.index, self.name)
    }
}

/// A name for a thread of a stage: the stage's name and the thread's index, cut to the 15
/// bytes Linux keeps (name first), with any NUL byte replaced (the OS refuses those).
pub(crate) fn thread_name(stage: &str, index: usize) -> String {
    let suffix = format!("#{index}");
    let room = 15usize.saturating_sub(suffix.len());
    let mut cut = stage.len().min(room);
    while !stage.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", stage[..cut].replace('\0', "?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_keep_the_index_within_15_bytes() {
        assert_eq!(thread_name("fetch", 3), "fetch#3");
        assert_eq!(thread_name("a-very-long-stage-name", 12), "a-very-long-#12");
        assert!(
            thread_name("a-very-long-stage-name", usize::MAX).ends_with(&usize::MAX.to_string())
        );
    }

    #[test]
    fn thread_names_cut_on_a_char_boundary_and_drop_nul() {
        let name = thread_name("ééééééééé", 1);
        assert!(name.len() <= 15 && name.ends_with("#1"), "{name}");
        assert_eq!(thread_name("a\0b", 0), "a?b#0");
    }

    #[test]
    fn stage_ids_display_index_and_name() {
        assert_eq!(
            StageId::new(2, "update".into()).to_string(),
            "stage 2 (update)"
        );
    }
}
