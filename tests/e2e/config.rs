//! Config loading errors as users see them.
