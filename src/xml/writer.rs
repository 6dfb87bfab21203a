//! Escaping writer. STUB: being implemented.

use super::Element;

/// Appends `text` escaped for XML character data.
pub fn escape_text(_text: &str, _out: &mut String) {
    todo!()
}

/// Appends `value` escaped for a double-quoted attribute value.
pub fn escape_attr(_value: &str, _out: &mut String) {
    todo!()
}

/// Appends `el` serialised; `parent_ns` is the namespace in scope.
pub fn write_element(_el: &Element, _parent_ns: &str, _out: &mut String) {
    todo!()
}
