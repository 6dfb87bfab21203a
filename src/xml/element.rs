//! A tiny element tree: what the stanza reader produces and the writer consumes.

/// A child of an [`Element`]: another element or a run of text (already unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, entities and CDATA resolved.
    Text(String),
}

/// An XML element with its namespace resolved.
///
/// `name` is the local name (`gcm` for `<data:gcm>`), `ns` the namespace URI
/// after prefix resolution (`google:mobile:data`), or `""` when none applies.
/// Attributes keep their qualified name as written, minus `xmlns`
/// declarations, which are folded into `ns`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    /// An empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Adds a child element (builder style).
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Adds a text node (builder style).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Sets an attribute, replacing an earlier value of the same name.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Appends a child node.
    pub fn push(&mut self, node: Node) {
        self.children.push(node);
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved namespace URI (`""` if none).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True if this element has local name `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The value of attribute `name` (qualified name as written), if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> &[(String, String)] {
        &self.attrs
    }

    /// All child nodes in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// The child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with local name `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    /// The first child element with local name `name`, in any namespace.
    pub fn child_named(&self, name: &str) -> Option<&Element> {
        self.children().find(|e| e.name == name)
    }

    /// The concatenated direct text children.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
